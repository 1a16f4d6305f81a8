"""The dashboard's charts and cards: pure functions of the gold reader's frames.

Charts are Vega-Lite specs, drawn by Streamlit's own Vega renderer. Plotly was the first choice; its
browser bundle alone made the page take 2.1 s to show two trivial charts on this project's 2-core machine
(Vega-Lite: 1.0 s), against a target of 2 s for the whole page (docs/dashboard.md).
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

# Relative volatility 0 (calm) .. COLOUR_CAP and above (wild); 1.0 = the market's average.
COLOUR_SCHEME = "redyellowgreen"  # reversed below: green calm, red wild
COLOUR_CAP = 2.0
NO_VOLATILITY_COLOUR = "#b0b0b0"  # fewer than two 1-minute returns in the window yet
UP, DOWN = "#26a69a", "#ef5350"
# Drawn as SVG (vega-embed's option read from the spec), so a chart's marks are in the page's DOM.
EMBED = {"embedOptions": {"renderer": "svg", "actions": False}}
BUCKET = {"minute": pd.Timedelta(minutes=1), "day": pd.Timedelta(days=1)}


def trend(frame: pd.DataFrame) -> pd.Series:
    """The least-squares line through the candles' closes over their times (flat for one candle)."""
    if len(frame) < 2:
        return frame["close"].astype(float)
    x = (frame["bucket_start"] - frame["bucket_start"].iloc[0]).dt.total_seconds().to_numpy(dtype=float)
    y = frame["close"].to_numpy(dtype=float)
    x_mean, y_mean = x.mean(), y.mean()
    spread = ((x - x_mean) ** 2).sum()
    slope = ((x - x_mean) * (y - y_mean)).sum() / spread if spread else 0.0
    return pd.Series(y_mean + slope * (x - x_mean), index=frame.index)


def candle_rows(frame: pd.DataFrame, grain: str) -> pd.DataFrame:
    """The candles with what the chart draws: each body from 10 % to 90 % of its bucket, the wick at the
    middle, the trend line and the direction (a close at the open counts as up)."""
    width = BUCKET[grain]
    start = frame["bucket_start"]
    return frame.assign(
        body_start=start + width * 0.1,
        body_end=start + width * 0.9,
        middle=start + width * 0.5,
        trend=trend(frame),
        direction=[
            "up" if close >= open_ else "down"
            for open_, close in zip(frame["open"], frame["close"], strict=True)
        ],
    )


def _epoch_ms(moment: pd.Timestamp) -> int:
    """A naive UTC timestamp as Vega's time value."""
    return int(moment.tz_localize("UTC").timestamp() * 1000)


def candlestick_spec(frame: pd.DataFrame, symbol: str, grain: str) -> dict[str, Any]:
    """Candles, their trend line and the samples per candle (bars along the bottom, their own scale), with
    tooltips and zoom/pan on time; data: ``candle_rows(frame, grain)``."""
    time_format = "%H:%M" if grain == "minute" else "%b %d"
    low = float(frame["low"].min())
    high = float(frame["high"].max())
    pad = (high - low) * 0.05 or max(abs(high) * 0.001, 0.01)
    price = {"type": "quantitative", "scale": {"domain": [low - pad, high + pad], "zero": False}}
    # Times are UTC, and shown so whatever the browser's time zone (a utc scale, utc time units).
    when = {
        "field": "bucket_start",
        "type": "temporal",
        "title": "UTC",
        "timeUnit": "utcyearmonthdatehoursminutes",
    }
    tooltip = (
        [when]
        + [
            {"field": name, "type": "quantitative", "format": ",.2f"}
            for name in ("open", "high", "low", "close")
        ]
        + [{"field": "sample_count", "type": "quantitative", "title": "samples"}]
    )
    colour = {
        "field": "direction", "type": "nominal", "legend": None,
        "scale": {"domain": ["up", "down"], "range": [UP, DOWN]},
    }  # fmt: skip
    width = BUCKET[grain]
    first, last = frame["bucket_start"].min(), frame["bucket_start"].max()
    # The candles' own span, and a bucket either side of a lone candle (not a zoom into a fraction of it).
    margin = width if len(frame) == 1 else pd.Timedelta(0)
    domain = [_epoch_ms(first - margin), _epoch_ms(last + width + margin)]
    x_axis = {
        "type": "temporal", "title": None,
        "scale": {"type": "utc", "domain": domain},
        "axis": {"format": time_format, "labelOverlap": True},
    }  # fmt: skip
    most_samples = float(frame["sample_count"].max()) if len(frame) else 1.0
    return {
        "usermeta": EMBED,
        "height": 340,
        "title": {
            "text": f"{symbol} · {'1-minute candles, today' if grain == 'minute' else 'daily candles'}",
            "anchor": "start",
            "fontSize": 13,
        },  # fmt: skip
        "layer": [
            {
                "name": "samples",
                "mark": {"type": "bar", "color": "#cfd8dc"},
                "encoding": {
                    "x": {"field": "body_start", **x_axis},
                    "x2": {"field": "body_end"},
                    # Bars up to a quarter of the height: the scale reaches 4 x the largest count.
                    "y": {
                        "field": "sample_count",
                        "type": "quantitative",
                        "axis": None,
                        "scale": {"domain": [0, most_samples * 4]},
                    },
                    "tooltip": tooltip,
                },
            },
            {
                "layer": [
                    {
                        "name": "wicks",
                        "mark": {"type": "rule"},
                        "encoding": {
                            "x": {"field": "middle", **x_axis},
                            "y": {"field": "low", **price, "title": "price (USD)"},
                            "y2": {"field": "high"},
                            "color": colour,
                        },
                    },
                    {
                        "name": "candles",
                        # Outlined, so a candle whose close equals its open still shows as a line.
                        "mark": {"type": "bar", "strokeWidth": 1},
                        "params": [
                            {
                                "name": "zoom",
                                "select": {"type": "interval", "encodings": ["x"]},
                                "bind": "scales",
                            }
                        ],
                        "encoding": {
                            "x": {"field": "body_start", **x_axis},
                            "x2": {"field": "body_end"},
                            "y": {"field": "open", **price},
                            "y2": {"field": "close"},
                            "color": colour,
                            "stroke": colour,
                            "tooltip": tooltip,
                        },
                    },
                    {
                        "name": "trend",
                        "mark": {
                            "type": "line",
                            "strokeDash": [5, 4],
                            "color": "#5c6bc0",
                            "strokeWidth": 1.5,
                        },
                        "encoding": {"x": {"field": "middle", **x_axis}, "y": {"field": "trend", **price}},
                    },
                ],
            },
        ],
        "resolve": {"scale": {"y": "independent"}},
    }


def squarify(values: Sequence[float], width: float, height: float) -> list[tuple[float, float, float, float]]:
    """Tiles (x, y, w, h) filling a width x height box, one per value in the given order (sort the values
    largest first for squarish tiles), each with an area proportional to its value: the squarified layout of
    Bruls, Huizing and van Wijk (2000). Values must be positive."""
    total = float(sum(values))
    scale = width * height / total if total > 0 else 0.0
    areas = [value * scale for value in values]
    tiles: list[tuple[float, float, float, float]] = []
    x, y, w, h = 0.0, 0.0, float(width), float(height)
    index = 0
    while index < len(areas):
        side = min(w, h)
        row = [areas[index]]
        index += 1
        while index < len(areas) and _worst(row + [areas[index]], side) <= _worst(row, side):
            row.append(areas[index])
            index += 1
        thickness = sum(row) / side if side else 0.0
        offset = 0.0
        for area in row:
            length = area / thickness if thickness else 0.0
            if w >= h:  # a column along the left edge
                tiles.append((x, y + offset, thickness, length))
            else:  # a row along the top edge
                tiles.append((x + offset, y, length, thickness))
            offset += length
        if w >= h:
            x, w = x + thickness, w - thickness
        else:
            y, h = y + thickness, h - thickness
    return tiles


def _worst(row: list[float], side: float) -> float:
    """The largest aspect ratio of the tiles of ``row`` laid along a side of length ``side``."""
    total = sum(row)
    if total <= 0 or side <= 0:
        return math.inf
    return max(
        max(side * side * area / (total * total), (total * total) / (side * side * area)) for area in row
    )


TREEMAP_WIDTH, TREEMAP_HEIGHT = 100.0, 62.0
# The tiles' box as the chart's x and y (no axes; y downwards, as the layout is computed).
BOX_X = {"type": "quantitative", "axis": None, "scale": {"domain": [0, TREEMAP_WIDTH], "nice": False}}
BOX_Y = {"type": "quantitative", "axis": None,
         "scale": {"domain": [0, TREEMAP_HEIGHT], "nice": False, "reverse": True}}  # fmt: skip


def treemap_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """gold_treechart's rows with their tiles: largest avg_price first, size = avg_price."""
    tiles = frame.sort_values(["avg_price", "symbol"], ascending=[False, True], kind="stable").reset_index(
        drop=True
    )
    boxes = squarify(list(tiles["avg_price"]), TREEMAP_WIDTH, TREEMAP_HEIGHT)
    relative = [None if pd.isna(v) else float(v) for v in tiles["relative_volatility"]]
    return tiles.assign(
        x=[b[0] for b in boxes],
        x2=[b[0] + b[2] for b in boxes],
        y=[b[1] for b in boxes],
        y2=[b[1] + b[3] for b in boxes],
        relative_volatility=relative,
        # A null on a continuous colour scale would make Vega-Lite drop the tile: colour a stand-in value,
        # overridden to grey by the spec's condition on has_volatility.
        has_volatility=[r is not None for r in relative],
        colour_value=[0.0 if r is None else r for r in relative],
        vol_text=["vol n/a" if r is None else f"{r:.2f}x avg vol" for r in relative],
        price_text=[f"{p:,.2f}" for p in tiles["last_price"]],
        # Text only where it fits (in the box's units, 100 across the chart): the symbol, then the figures.
        labelled=[b[2] >= 10 and b[3] >= 6 for b in boxes],
        detailed=[b[2] >= 20 and b[3] >= 13 for b in boxes],
    )


def treemap_spec() -> dict[str, Any]:
    """gold_treechart as tiles: size = avg_price, colour = relative_volatility (grey: no volatility yet),
    with a colour legend; data: ``treemap_rows(frame)``."""
    tooltip = [
        {"field": "symbol", "type": "nominal"},
        {"field": "avg_price", "type": "quantitative", "format": ",.2f", "title": "avg price (size)"},
        {"field": "last_price", "type": "quantitative", "format": ",.2f", "title": "last price"},
        {
            "field": "relative_volatility",
            "type": "quantitative",
            "format": ".2f",
            "title": "relative volatility (colour)",
        },
        {"field": "volatility", "type": "quantitative", "format": ".5f"},
        {"field": "candle_count", "type": "quantitative", "title": "1-minute candles"},
    ]
    labels, details = {"filter": "datum.labelled"}, {"filter": "datum.detailed"}
    return {
        "usermeta": EMBED,
        "height": 420,
        "layer": [
            {
                "name": "tiles",
                "mark": {"type": "rect", "stroke": "white", "strokeWidth": 1.5},
                "encoding": {
                    "x": {"field": "x", **BOX_X}, "x2": {"field": "x2"},
                    "y": {"field": "y", **BOX_Y}, "y2": {"field": "y2"},
                    "color": {
                        "condition": {"test": "!datum.has_volatility", "value": NO_VOLATILITY_COLOUR},
                        "field": "colour_value", "type": "quantitative",
                        "title": ["relative volatility", "(1 = market average)"],
                        "scale": {"scheme": COLOUR_SCHEME, "reverse": True, "domain": [0, COLOUR_CAP], "clamp": True},
                    },
                    "tooltip": tooltip,
                },
            },
            tile_text("labels", "symbol", labels, dy=4, fontWeight="bold"),
            tile_text("details", "price_text", details, dy=19, fontSize=10),
            tile_text("volatility", "vol_text", details, dy=32, fontSize=10),
        ],
    }  # fmt: skip


def tile_text(name: str, field: str, where: dict[str, str], dy: int, **style: Any) -> dict[str, Any]:
    """A text layer at each tile's top-left corner, ``dy`` pixels down, for the tiles ``where`` keeps."""
    return {
        "name": name,
        "transform": [where],
        "mark": {"type": "text", "align": "left", "baseline": "top", "dx": 4, "dy": dy, **style},
        "encoding": {"x": {"field": "x", **BOX_X}, "y": {"field": "y", **BOX_Y}, "text": {"field": field}},
    }


def treemap_legend_html(window_start: dt.datetime | None, window_end: dt.datetime | None) -> str:
    window = (
        f"{window_start:%H:%M}–{window_end:%H:%M} UTC"
        if window_start is not None and window_end
        else "the window"
    )
    return (
        '<div class="sp-legend" data-testid="treemap-legend">'
        f"<b>Size</b>: mean 1-minute close over {html.escape(window)} (<code>avg_price</code>). "
        "<b>Colour</b>: volatility of the 1-minute log returns relative to the market's mean "
        f"(<code>relative_volatility</code>; 1.0 = average, green calmer, red wilder, capped at {COLOUR_CAP:g}); "
        f'<span class="sp-swatch" style="background:{NO_VOLATILITY_COLOUR}"></span>grey: fewer than two returns '
        "yet. Hover a tile for its figures."
        "</div>"
    )


def stale_symbols(kpis: pd.DataFrame, within_s: int) -> set[str]:
    """Symbols whose latest quote is more than ``within_s`` older than the newest quote of any symbol."""
    cutoff = kpis["as_of"].max() - pd.Timedelta(seconds=within_s)
    return set(kpis.loc[kpis["as_of"] < cutoff, "symbol"])


def card_rows(kpis: pd.DataFrame, chosen: str, movers: int) -> pd.DataFrame:
    """The chosen symbol's row first, then the ``movers`` other symbols with the largest |change %|."""
    others = kpis[kpis["symbol"] != chosen]
    biggest = others.reindex(others["change_pct"].abs().sort_values(ascending=False, kind="stable").index)
    return pd.concat([kpis[kpis["symbol"] == chosen], biggest.head(movers)])


def _number(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def kpi_cards_html(frame: pd.DataFrame, stale: set[str]) -> str:
    """One card per row of gold_kpi: price, change, change %, day high/low, as of, and a stale badge.

    Values are printed from the row as gold_kpi holds it (2 decimals for prices, as in the table), and
    carried exactly in data attributes for tests and scripts.
    """
    cards = []
    for row in frame.itertuples():
        direction = "up" if row.change > 0 else "down" if row.change < 0 else "flat"
        sign = "+" if row.change > 0 else ""
        badge = '<span class="sp-stale">stale</span>' if row.symbol in stale else ""
        symbol = html.escape(str(row.symbol))
        cards.append(
            f'<div class="sp-card" data-symbol="{symbol}" data-price="{row.price!r}" '
            f'data-as-of="{row.as_of:%Y-%m-%dT%H:%M:%S}">'
            f'<div class="sp-card-head"><span class="sp-symbol">{symbol}</span>{badge}</div>'
            f'<div class="sp-price">{_number(row.price)}</div>'
            f'<div class="sp-change sp-{direction}">{sign}{_number(row.change)} ({sign}{_number(row.change_pct)}%)</div>'
            f'<div class="sp-range">H {_number(row.day_high)} · L {_number(row.day_low)}</div>'
            f'<div class="sp-asof">as of {row.as_of:%H:%M:%S} UTC</div>'
            "</div>"
        )
    return f'<div class="sp-cards">{"".join(cards)}</div>'


CSS = """
<style>
.block-container { padding-top: 1.5rem; }
.sp-cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 10px; }
.sp-card { border: 1px solid #e0e0e0; border-radius: 8px; padding: 8px 12px; background: #fff; }
.sp-card-head { display: flex; justify-content: space-between; align-items: center; }
.sp-symbol { font-weight: 700; font-size: 1.0rem; }
.sp-price { font-size: 1.45rem; font-weight: 600; font-variant-numeric: tabular-nums; }
.sp-change { font-variant-numeric: tabular-nums; }
.sp-up { color: #1b8a5a; } .sp-down { color: #c62828; } .sp-flat { color: #616161; }
.sp-range, .sp-asof { color: #616161; font-size: 0.8rem; font-variant-numeric: tabular-nums; }
.sp-stale { background: #ffb300; color: #3e2723; border-radius: 4px; padding: 0 6px; font-size: 0.7rem;
  font-weight: 700; text-transform: uppercase; }
.sp-legend { font-size: 0.85rem; color: #424242; }
.sp-swatch { display: inline-block; width: 12px; height: 10px; margin: 0 4px 0 12px; vertical-align: middle; }
.sp-health a { text-decoration: none; }
</style>
"""
