"""stock_platform's live dashboard: the gold tables as KPI cards, candlesticks and the volatility treemap (Vega-Lite),
with the pipeline's health; a Streamlit script started by ``stock-platform dashboard``.

Live without reloading the page: a fragment looks at gold every DASHBOARD_REFRESH_SECONDS (on DuckDB a
stat of the snapshot file, on Snowflake one small query) and refreshes the health strip; only when gold
changed does it rerun the page's script, which Streamlit sends over its websocket as changed elements.
Frames are cached by gold's version, so an idle page costs one look per refresh and no re-render.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

import pandas as pd
import streamlit as st

from stock_platform.dashboard import figures
from stock_platform.dashboard.gold_reader import (
    DAILY_CANDLE_DAYS,
    GoldEmpty,
    GoldReader,
    GoldUnavailable,
    reader_for,
)
from stock_platform.dashboard.health import KafkaWatcher, pipeline_health
from stock_platform.settings import Settings, SettingsError, load_settings

TOP_MOVERS = 11  # cards besides the chosen symbol's; all 100 are in the table below them


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def sentence(problem: Exception) -> str:
    """A message as the end of a sentence the page completes (no doubled full stop)."""
    return str(problem).rstrip(" .!")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@st.cache_resource(show_spinner=False)
def configured() -> tuple[Settings, GoldReader]:
    settings = load_settings()
    return settings, reader_for(settings)


# Frames by gold's version: a rerun that finds gold unchanged reads nothing.
@st.cache_data(max_entries=4, show_spinner=False)
def load_kpis(_reader: GoldReader, version: tuple[Any, ...]) -> pd.DataFrame:
    return _reader.kpis()


# Charts too: their rows and specs, by gold's version.
@st.cache_resource(max_entries=16, show_spinner=False)
def candle_chart(
    _reader: GoldReader, version: tuple[Any, ...], symbol: str, grain: str
) -> tuple[pd.DataFrame | None, dict[str, Any], str]:
    """One symbol's candles of a grain: (rows, spec, caption), or (None, {}, message) when there are none."""
    frame = _reader.candles(symbol, grain)
    if frame.empty:
        what = "1-minute candles today" if grain == "minute" else "daily candles"
        return None, {}, f"No {what} for {symbol}."
    caption = (
        f"{plural(len(frame), 'candle')}, {int(frame['sample_count'].sum()):,} quotes sampled; "
        "dashed: least-squares trend of the closes; grey bars: samples per candle. Drag to pan, scroll to zoom."
    )
    return figures.candle_rows(frame, grain), figures.candlestick_spec(frame, symbol, grain), caption


@st.cache_resource(max_entries=4, show_spinner=False)
def treemap_chart(_reader: GoldReader, version: tuple[Any, ...]) -> tuple[pd.DataFrame | None, str]:
    """The treemap's rows and its legend; (None, message) when no symbol has a candle in the window."""
    tiles = _reader.treemap()
    if tiles.empty:
        return None, "No symbol has a 1-minute candle in the volatility window yet."
    legend = figures.treemap_legend_html(tiles["window_start"].min(), tiles["window_end"].max())
    return figures.treemap_rows(tiles), legend


@st.cache_resource(show_spinner=False)
def kafka_watcher(_settings: Settings) -> KafkaWatcher:
    return KafkaWatcher(_settings, _settings.dashboard_refresh_seconds)


def show_health(settings: Settings, reader: GoldReader, version: tuple[Any, ...] | None) -> None:
    newest_fetch = None
    if version is not None:
        try:
            newest_fetch = load_kpis(reader, version)["fetched_at"].max()
        except GoldUnavailable:
            newest_fetch = None
    state = pipeline_health(settings, newest_fetch, kafka_watcher(settings).latest, utc_now())
    cells = [
        (
            "newest_fetch",
            "Newest gold quote",
            f"{state.newest_fetch:%H:%M:%S} UTC" if state.newest_fetch else "—",
        ),
        (
            "minutes_behind",
            "Minutes behind",
            f"{state.minutes_behind:.1f}" if state.minutes_behind is not None else "—",
        ),
        (
            "consumer_lag",
            "Consumer lag",
            f"{state.consumer_lag:,}" if state.consumer_lag is not None else "—",
        ),
        (
            "dead_letters_last_hour",
            "Dead letters (1 h)",
            f"{state.dead_letters_last_hour:,}" if state.dead_letters_last_hour is not None else "—",
        ),
    ]
    columns = st.columns(len(cells))
    for column, (key, label, value) in zip(columns, cells, strict=True):
        problem = state.problems.get(key)
        with column:
            st.markdown(
                f'<div class="sp-health" data-testid="health-{key}"><div class="sp-asof">{label}</div>'
                f'<div class="sp-price" style="font-size:1.2rem">{html.escape(value)}</div>'
                f'<a href="{html.escape(state.links[key])}" target="_blank">open in Dagster ↗</a></div>',
                unsafe_allow_html=True,
            )
            if problem:
                st.caption(f"⚠ {problem}")
    behind = state.minutes_behind
    if behind is not None and behind * 60 > settings.gold_fresh_within_seconds:
        st.warning(
            f"Gold is stale: its newest quote was fetched {behind:.0f} minute(s) ago (more than "
            f"GOLD_FRESH_WITHIN_SECONDS={settings.gold_fresh_within_seconds}). The market may be closed, or "
            "the pipeline is behind or stopped: see the consumer lag and the lag sensor in Dagster."
        )


def page() -> None:
    st.markdown(figures.CSS, unsafe_allow_html=True)
    st.markdown("### stock_platform · live gold")
    try:
        settings, reader = configured()
    except SettingsError as exc:
        st.error(f"The dashboard's settings are not usable: {exc}. Fix the environment and restart it.")
        return

    version: tuple[Any, ...] | None = None
    problem: GoldUnavailable | None = None
    try:
        status = reader.status()
        version = status.version
    except GoldUnavailable as exc:
        problem = exc
    st.session_state["rendered_version"] = version
    live_strip(settings, reader)

    if problem is not None:
        if isinstance(problem, GoldEmpty):
            st.info(f"No gold data yet: {sentence(problem)}.")
        else:
            st.error(f"Gold cannot be read right now: {sentence(problem)}. The page retries on its own.")
        return
    assert version is not None
    try:
        gold_sections(settings, reader, version)
    except GoldEmpty as exc:
        st.info(f"No gold data yet: {sentence(exc)}.")
    except GoldUnavailable as exc:
        st.error(f"Gold cannot be read right now: {sentence(exc)}. The page retries on its own.")


def live_strip(settings: Settings, reader: GoldReader) -> None:
    @st.fragment(run_every=dt.timedelta(seconds=settings.dashboard_refresh_seconds))
    def watch() -> None:
        rendered = st.session_state.get("rendered_version")
        try:
            status = reader.status()
            current: tuple[Any, ...] | None = status.version
            published = status.published_at
        except GoldUnavailable:
            current, published = None, None
        if current != rendered:
            st.session_state["changed_at"] = utc_now()
            st.rerun(scope="app")
        show_health(settings, reader, current)
        changed = published or st.session_state.get("changed_at")
        updated = f"gold updated {changed:%H:%M:%S} UTC · " if changed else ""
        st.markdown(
            f'<div class="sp-asof" id="sp-updated" data-version="{html.escape(repr(current))}">'
            f"{updated}checked {utc_now():%H:%M:%S} UTC · refreshes every "
            f"{settings.dashboard_refresh_seconds:g} s</div>",
            unsafe_allow_html=True,
        )

    watch()


def gold_sections(settings: Settings, reader: GoldReader, version: tuple[Any, ...]) -> None:
    kpis = load_kpis(reader, version)
    symbols = list(kpis["symbol"])
    default = "AAPL" if "AAPL" in symbols else symbols[0]
    if st.session_state.get("symbol") not in symbols:
        st.session_state["symbol"] = default
    left, right = st.columns([1, 3])
    with left:
        chosen = st.selectbox("Symbol", symbols, key="symbol")
    with right:
        st.caption(
            f"{plural(len(symbols), 'symbol')} · newest quote {kpis['as_of'].max():%Y-%m-%d %H:%M:%S} UTC · "
            f"a symbol is **stale** when its last quote is over {settings.gold_fresh_within_seconds} s older "
            "than the newest"
        )
    stale = figures.stale_symbols(kpis, settings.gold_fresh_within_seconds)
    st.markdown(
        figures.kpi_cards_html(figures.card_rows(kpis, chosen, TOP_MOVERS), stale), unsafe_allow_html=True
    )
    # A toggle, not an expander: a collapsed expander still loads the data grid, which costs page load.
    if st.toggle(f"Show all {plural(len(symbols), 'symbol')} (gold_kpi)", key="show_all"):
        table = kpis.assign(stale=kpis["symbol"].isin(stale)).drop(columns=["fetched_at"])
        st.dataframe(table, hide_index=True, width="stretch")

    candles_col, treemap_col = st.columns([3, 2])
    with candles_col:
        st.markdown(f"#### {chosen} candlesticks")
        # One grain drawn at a time: a chart in a hidden tab is still drawn, at the cost of page load.
        labels = {"minute": "Today, 1-minute", "day": f"Last {DAILY_CANDLE_DAYS} days, daily"}
        grain = (
            st.segmented_control(
                "Candles",
                list(labels),
                format_func=labels.__getitem__,
                default="minute",
                key="grain",
                label_visibility="collapsed",
            )  # fmt: skip
            or "minute"
        )
        rows, spec, caption = candle_chart(reader, version, chosen, grain)
        if rows is None:
            st.info(caption)
        else:
            st.vega_lite_chart(rows, spec, width="stretch", key=f"candles-{grain}")
            st.caption(caption)
    with treemap_col:
        st.markdown("#### Volatility treemap")
        try:
            tiles, legend = treemap_chart(reader, version)
        except GoldUnavailable as exc:
            st.info(f"The treemap is not available yet: {sentence(exc)}.")
            return
        if tiles is None:
            st.info(legend)
            return
        st.vega_lite_chart(tiles, figures.treemap_spec(), width="stretch", key="treemap")
        st.markdown(legend, unsafe_allow_html=True)


st.set_page_config(page_title="stock_platform · live gold", page_icon="📈", layout="wide")
try:
    page()
except Exception as exc:  # noqa: BLE001 - a page never shows a traceback; it says what failed
    st.error(
        f"The dashboard hit an unexpected error: {type(exc).__name__}: {exc}. It retries on the next refresh."
    )
