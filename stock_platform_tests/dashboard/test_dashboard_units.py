"""The dashboard's pure parts and its Kafka figures, against independent computations (fast tier)."""

from __future__ import annotations

import datetime as dt
import html
import math
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


def test_tiles_without_enough_returns_are_grey_and_colours_follow_relative_volatility():
    assert figures.volatility_colour(None) == figures.NO_VOLATILITY_COLOUR
    assert figures.volatility_colour(math.nan) == figures.NO_VOLATILITY_COLOUR
    calm, average, wild = (figures.volatility_colour(v) for v in (0.0, 1.0, 5.0))
    assert len({calm, average, wild}) == 3 and wild == figures.volatility_colour(figures.COLOUR_CAP)
    tiles = pd.DataFrame(
        {
            "symbol": ["AAPL", "ONE"],
            "avg_price": [230.0, 10.0],
            "last_price": [231.0, 10.0],
            "volatility": [0.001, None],
            "relative_volatility": [1.0, None],
            "candle_count": [60, 1],
        }
    )
    treemap = figures.treemap_figure(tiles).data[0]
    assert list(treemap.labels) == ["AAPL", "ONE"] and list(treemap.values) == [230.0, 10.0]
    assert list(treemap.marker.colors) == [average, figures.NO_VOLATILITY_COLOUR]
    assert "vol n/a" in treemap.text[1]


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
