"""The dashboard's pure parts and its Kafka figures, against independent computations (fast tier)."""

from __future__ import annotations

import datetime as dt
import html
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stock_platform.dashboard import figures
from stock_platform.dashboard.health import dagster_links, kafka_figures, pipeline_health
from stock_platform.orchestration.sensors import SENSOR_NAME
from stock_platform.settings import PROJECT_ROOT, load_settings
from stock_platform_tests.fake_kafka import FakeCluster, FakeKafkaResource

NOW = dt.datetime(2026, 12, 1, 15, 0)
NOW_MS = int(NOW.replace(tzinfo=dt.UTC).timestamp() * 1000)

symbols = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ&<>\"'", min_size=1, max_size=5)
prices = st.floats(min_value=0.0001, max_value=10_000_000, allow_nan=False)


@st.composite
def kpi_frames(draw: st.DrawFn) -> pd.DataFrame:
    names = draw(st.lists(symbols, min_size=1, max_size=15, unique=True))
    rows = []
    for name in names:
        price = draw(prices)
        rows.append(
            {
                "symbol": name,
                "price": price,
                "change": draw(st.floats(-1e6, 1e6, allow_nan=False)),
                "change_pct": draw(st.floats(-1e4, 1e4, allow_nan=False)),
                "day_high": price,
                "day_low": price,
                "as_of": NOW - dt.timedelta(seconds=draw(st.integers(0, 3600))),
                "fetched_at": NOW,
            }
        )
    return pd.DataFrame(rows)


@settings(max_examples=60, deadline=None)
@given(kpis=kpi_frames(), within=st.integers(1, 3600))
def test_a_symbol_is_stale_when_its_quote_lags_the_newest_by_more_than_the_bound(kpis, within):
    newest = max(kpis["as_of"])
    expected = {row.symbol for row in kpis.itertuples() if (newest - row.as_of).total_seconds() > within}
    assert figures.stale_symbols(kpis, within) == expected


@settings(max_examples=60, deadline=None)
@given(kpis=kpi_frames(), movers=st.integers(0, 20), data=st.data())
def test_cards_show_the_chosen_symbol_first_then_the_biggest_movers(kpis, movers, data):
    chosen = data.draw(st.sampled_from(list(kpis["symbol"])))
    cards = figures.card_rows(kpis, chosen, movers)
    assert cards["symbol"].iloc[0] == chosen
    rest = [row for row in kpis.to_dict("records") if row["symbol"] != chosen]
    assert len(cards) == 1 + min(movers, len(rest))
    shown = [abs(value) for value in cards["change_pct"].iloc[1:]]
    hidden = sorted((abs(row["change_pct"]) for row in rest), reverse=True)[len(shown) :]
    assert shown == sorted(shown, reverse=True)
    assert all(value >= max(hidden, default=0) for value in shown)


@settings(max_examples=60, deadline=None)
@given(kpis=kpi_frames(), data=st.data())
def test_a_card_carries_the_exact_gold_value_and_shows_it_rounded(kpis, data):
    stale = set(data.draw(st.lists(st.sampled_from(list(kpis["symbol"])), unique=True)))
    page = figures.kpi_cards_html(kpis, stale)
    cards = re.findall(
        r'<div class="sp-card" data-symbol="([^"]*)" data-price="([^"]*)".*?</div></div>', page
    )
    assert len(cards) == len(kpis)
    for (symbol, price), row in zip(cards, kpis.itertuples(), strict=True):
        assert html.unescape(symbol) == row.symbol
        assert float(price) == row.price  # repr round-trips the double exactly
    for row in kpis.itertuples():
        card = page.split(f'data-symbol="{html.escape(row.symbol)}"', 1)[1].split('class="sp-card"', 1)[0]
        assert f'<div class="sp-price">{row.price:,.2f}</div>' in card
        assert ('class="sp-stale"' in card) == (row.symbol in stale)
    assert "<script" not in page.lower()


@settings(max_examples=60, deadline=None)
@given(closes=st.lists(st.floats(1, 1000, allow_nan=False), min_size=1, max_size=60), gaps=st.data())
def test_the_trend_is_the_least_squares_line_of_the_closes(closes, gaps):
    steps = gaps.draw(st.lists(st.integers(1, 30), min_size=len(closes), max_size=len(closes)))
    times = pd.to_datetime(np.cumsum(steps), unit="m", origin=pd.Timestamp("2026-12-01"))
    frame = pd.DataFrame({"bucket_start": times, "close": closes})
    line = figures.trend(frame).to_numpy()
    if len(closes) == 1 or len(set(times)) == 1:
        assert line.tolist() == pytest.approx(closes)
        return
    x = (times - times[0]).total_seconds().to_numpy()
    slope, intercept = np.polyfit(x, np.array(closes), 1)
    assert line == pytest.approx(slope * x + intercept, rel=1e-6, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.floats(0.01, 1e6, allow_nan=False), min_size=1, max_size=120),
    width=st.floats(1, 500),
    height=st.floats(1, 500),
)
def test_squarified_tiles_fill_the_box_without_overlap_with_areas_in_proportion(values, width, height):
    values = sorted(values, reverse=True)
    tiles = figures.squarify(values, width, height)
    assert len(tiles) == len(values)
    total = sum(values)
    tolerance = 1e-6 * width * height
    for (x, y, w, h), value in zip(tiles, values, strict=True):
        assert w >= 0 and h >= 0
        assert (
            -tolerance <= x and x + w <= width + tolerance and -tolerance <= y and y + h <= height + tolerance
        )
        assert w * h == pytest.approx(value / total * width * height, rel=1e-6, abs=tolerance)
    assert sum(w * h for _, _, w, h in tiles) == pytest.approx(width * height, rel=1e-6)
    # No two tiles overlap (their interiors are disjoint).
    for i, (x1, y1, w1, h1) in enumerate(tiles):
        for x2, y2, w2, h2 in tiles[i + 1 :]:
            overlap_w = min(x1 + w1, x2 + w2) - max(x1, x2)
            overlap_h = min(y1 + h1, y2 + h2) - max(y1, y2)
            assert overlap_w <= tolerance or overlap_h <= tolerance


def test_treemap_rows_size_by_avg_price_and_mark_tiles_without_volatility():
    tiles = pd.DataFrame(
        {
            "symbol": ["ONE", "AAPL", "MSFT"],
            "avg_price": [10.0, 230.0, 420.0],
            "last_price": [10.0, 231.0, 421.5],
            "volatility": [None, 0.001, 0.002],
            "relative_volatility": [None, 0.6667, 1.3333],
            "candle_count": [1, 60, 60],
        }
    )
    rows = figures.treemap_rows(tiles)
    assert list(rows["symbol"]) == ["MSFT", "AAPL", "ONE"]  # largest first
    areas = (rows["x2"] - rows["x"]) * (rows["y2"] - rows["y"])
    box = figures.TREEMAP_WIDTH * figures.TREEMAP_HEIGHT
    assert list(areas) == pytest.approx([box * v / 660.0 for v in (420.0, 230.0, 10.0)])
    assert pd.isna(rows["relative_volatility"].iloc[2]) and list(rows["vol_text"]) == [
        "1.33x avg vol", "0.67x avg vol", "vol n/a",
    ]  # fmt: skip
    spec = figures.treemap_spec()
    colour = spec["layer"][0]["encoding"]["color"]
    assert colour["field"] == "colour_value"
    assert colour["condition"]["value"] == figures.NO_VOLATILITY_COLOUR
    assert list(rows["has_volatility"]) == [True, True, False]
    assert list(rows["colour_value"]) == pytest.approx([1.3333, 0.6667, 0.0])
    assert spec["layer"][0]["encoding"]["x"]["field"] == "x" and spec["usermeta"] == figures.EMBED


def test_candle_rows_draw_each_body_inside_its_bucket_and_colour_by_direction():
    frame = pd.DataFrame(
        {
            "bucket_start": pd.to_datetime(["2026-12-01 10:00", "2026-12-01 10:01"]),
            "open": [10.0, 11.0],
            "high": [12.0, 11.5],
            "low": [9.5, 10.0],
            "close": [11.0, 10.5],
            "sample_count": [6, 4],
        }
    )
    rows = figures.candle_rows(frame, "minute")
    assert list(rows["direction"]) == ["up", "down"]
    assert (rows["body_start"] > rows["bucket_start"]).all()
    assert (rows["body_end"] < rows["bucket_start"] + pd.Timedelta(minutes=1)).all()
    spec = figures.candlestick_spec(frame, "AAPL", "minute")
    low, high = spec["layer"][1]["layer"][0]["encoding"]["y"]["scale"]["domain"]
    assert low < 9.5 and high > 12.0  # every wick inside the price scale


def test_the_health_links_name_pages_that_exist():
    links = dagster_links("http://127.0.0.1:3000/")
    workspace = (PROJECT_ROOT / "workspace.yaml").read_text()
    assert "location_name: stock_platform" in workspace
    assert links["consumer_lag"] == f"http://127.0.0.1:3000/locations/stock_platform/sensors/{SENSOR_NAME}"
    assert links["newest_fetch"] == "http://127.0.0.1:3000/assets/gold_kpi"


@settings(max_examples=80, deadline=None)
@given(
    appends=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 7200_000)), max_size=60),
    since=st.integers(-1, 7300_000),
)
def test_records_since_counts_exactly_the_records_stamped_at_or_after(appends, since):
    cluster = FakeCluster(topic="dlq", partitions=3)
    stamps: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for partition, offset_ms in sorted(appends, key=lambda item: item[1]):
        cluster.append(partition, NOW_MS - 7200_000 + offset_ms, b'{"symbol":"A"}', key=b"A")
        stamps[partition].append(NOW_MS - 7200_000 + offset_ms)
    expected = sum(1 for values in stamps.values() for stamp in values if stamp >= NOW_MS - 7200_000 + since)
    assert cluster.resource().records_since(NOW_MS - 7200_000 + since) == expected


def test_kafka_figures_are_the_ingest_lag_and_the_last_hours_dead_letters():
    quotes = FakeCluster(topic="stock-quotes", partitions=2)
    for offset in range(5):
        quotes.append(0, NOW_MS - 1000 + offset, b'{"symbol":"A"}', key=b"A")
    quotes.append(1, NOW_MS, b'{"symbol":"A"}', key=b"A")
    quotes.committed = {0: 2}  # partition 0: 3 behind; partition 1: never committed, 1 behind
    env = {"KAFKA_BOOTSTRAP_SERVERS": quotes.address, "KAFKA_INGEST_GROUP": "ingest"}
    found = kafka_figures(load_settings(env), NOW, FakeKafkaResource)
    assert found.consumer_lag == 4
    # The fake holds one topic, so the dead-letter topic is missing: said, not raised.
    assert (
        found.dead_letters_last_hour is None and "does not exist" in found.problems["dead_letters_last_hour"]
    )
    quotes.reachable = False
    down = kafka_figures(load_settings(env), NOW, FakeKafkaResource)
    assert down.consumer_lag is None and "did not answer" in down.problems["consumer_lag"]
    health = pipeline_health(load_settings(env), NOW - dt.timedelta(minutes=3), down, NOW)
    assert health.minutes_behind == 3.0 and health.problems == down.problems
