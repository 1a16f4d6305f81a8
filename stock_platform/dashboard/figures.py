"""The dashboard's Plotly figures and cards: pure functions of the gold reader's frames."""

from __future__ import annotations

import datetime as dt
import html
import math

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

# Relative volatility 0 (calm) .. COLOUR_CAP and above (wild); 1.0 = the market's average.
COLOUR_SCALE = "RdYlGn_r"
COLOUR_CAP = 2.0
NO_VOLATILITY_COLOUR = "#b0b0b0"  # fewer than two 1-minute returns in the window yet
UP, DOWN = "#26a69a", "#ef5350"


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


def candlestick_figure(frame: pd.DataFrame, symbol: str, grain: str) -> go.Figure:
    """Candles with their trend line above, and the samples per candle as bars below."""
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.76, 0.24], vertical_spacing=0.03)
    label = "1-minute" if grain == "minute" else "daily"
    figure.add_trace(
        go.Candlestick(
            x=frame["bucket_start"],
            open=frame["open"],
            high=frame["high"],
            low=frame["low"],
            close=frame["close"],
            name=f"{symbol} {label}",
            increasing_line_color=UP,
            decreasing_line_color=DOWN,
        ),
        row=1,
        col=1,
    )
    figure.add_trace(
        go.Scatter(
            x=frame["bucket_start"],
            y=trend(frame),
            mode="lines",
            name="trend (least squares)",
            line={"color": "#5c6bc0", "width": 1.5, "dash": "dash"},
            hoverinfo="skip",
        ),
        row=1,
        col=1,
    )
    figure.add_trace(
        go.Bar(
            x=frame["bucket_start"],
            y=frame["sample_count"],
            name="samples per candle",
            marker_color="#90a4ae",
            hovertemplate="%{y} samples<extra></extra>",
        ),
        row=2,
        col=1,
    )
    figure.update_layout(
        height=430,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis_rangeslider_visible=False,
        legend={"orientation": "h", "y": 1.08, "x": 0},
        uirevision=f"{symbol}-{grain}",  # keep the user's zoom across live updates
    )
    if len(frame) == 1:
        # Plotly zooms a single candle to a fraction of a second; show the bucket's neighbourhood instead.
        width = pd.Timedelta(minutes=1) if grain == "minute" else pd.Timedelta(days=1)
        start = frame["bucket_start"].iloc[0]
        figure.update_xaxes(range=[start - width, start + width])
    figure.update_yaxes(title_text="price (USD)", row=1, col=1)
    figure.update_yaxes(title_text="samples", row=2, col=1)
    return figure


def volatility_colour(relative: float | None) -> str:
    if relative is None or (isinstance(relative, float) and math.isnan(relative)):
        return NO_VOLATILITY_COLOUR
    return sample_colorscale(COLOUR_SCALE, [min(max(relative, 0.0), COLOUR_CAP) / COLOUR_CAP])[0]


def treemap_figure(frame: pd.DataFrame) -> go.Figure:
    """gold_treechart's tiles: size = avg_price, colour = relative_volatility (grey: not enough candles)."""
    relative = [None if pd.isna(value) else float(value) for value in frame["relative_volatility"]]
    texts = [
        f"{row.last_price:,.2f}<br>" + ("vol n/a" if rel is None else f"{rel:.2f}× avg vol")
        for row, rel in zip(frame.itertuples(), relative, strict=True)
    ]
    figure = go.Figure(
        go.Treemap(
            labels=frame["symbol"],
            parents=[""] * len(frame),
            values=frame["avg_price"],
            text=texts,
            textinfo="label+text",
            marker={"colors": [volatility_colour(rel) for rel in relative]},
            customdata=frame[["avg_price", "volatility", "candle_count"]].to_numpy(),
            hovertemplate=(
                "<b>%{label}</b><br>avg price %{customdata[0]:,.2f}<br>volatility %{customdata[1]:.5f}"
                "<br>%{customdata[2]} candles<extra></extra>"
            ),
            sort=True,
        )
    )
    figure.update_layout(height=460, margin={"l": 0, "r": 0, "t": 0, "b": 0}, uirevision="treemap")
    return figure


def treemap_legend_html(window_start: dt.datetime | None, window_end: dt.datetime | None) -> str:
    stops = ", ".join(volatility_colour(COLOUR_CAP * i / 4) for i in range(5))
    window = (
        f"{window_start:%H:%M}–{window_end:%H:%M} UTC"
        if window_start is not None and window_end
        else "the window"
    )
    return (
        '<div class="sp-legend" data-testid="treemap-legend">'
        f"<b>Size</b>: mean 1-minute close over {html.escape(window)} (<code>avg_price</code>). "
        "<b>Colour</b>: volatility of 1-minute log returns relative to the market's mean "
        "(<code>relative_volatility</code>, 1.0 = average):"
        f'<span class="sp-gradient" style="background: linear-gradient(to right, {stops})"></span>'
        f"0 … {COLOUR_CAP:g}+"
        f'<span class="sp-swatch" style="background:{NO_VOLATILITY_COLOUR}"></span>fewer than two returns yet'
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
.sp-gradient { display: inline-block; width: 120px; height: 10px; margin: 0 6px; vertical-align: middle;
  border-radius: 2px; }
.sp-swatch { display: inline-block; width: 12px; height: 10px; margin: 0 4px 0 12px; vertical-align: middle; }
.sp-health a { text-decoration: none; }
</style>
"""
