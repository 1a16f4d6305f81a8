"""The live dashboard's speed: page load, gold-to-screen latency, and what an open page costs the pipeline.

Seeds a DuckDB warehouse in a temporary folder with ``--symbols`` simulated symbols × ``--minutes`` minutes
of quotes (one every ``--every-s`` seconds per symbol), builds gold with the real dbt assets in-process
(which publishes the dashboard's snapshot), starts `stock-platform dashboard` (DASHBOARD_REFRESH_SECONDS
``--refresh``, the product's default 3 s; Kafka is not started, so the health strip's Kafka figures show
"—") and drives it with headless Chromium. The history ends just before midnight UTC, less the minutes
appended later, so the 1-minute chart of the chosen symbol holds about a full day of candles: the
heaviest page the dashboard draws.

(a) page load to interactive: from Page.navigate (after about:blank) until the chosen symbol's KPI card
    and both charts (candlesticks and treemap) are drawn in the page, polled every 50 ms; the
    first load (cold browser cache, first script run of the server) separately, then ``--loads`` more.
(b) gold → screen: ``--appends`` times, one more minute of quotes is appended to the raw table and built
    into gold (silver + gold, as a minute's run does) while a thread polls the open page every 50 ms until
    the chosen symbol's card changes; it must then show gold_kpi's new price. Measured from
      - the gold_kpi materialization event (its Dagster event-log time): what the Dagster UI shows as
        "gold_kpi materialized", and the figure held to the target. The dbt step publishes the snapshot
        after its gold events, so this includes the publication (the copy of gold into the snapshot);
      - the snapshot's publication (the new file's mtime, written just before it is renamed into place):
        the dashboard's own share, i.e. its poll interval + rerun + render. The end of the run is not
        used: the page often shows the value before the Dagster run has finished tearing down.
(c) per-minute run with the dashboard open vs closed: the wall time of ``materialize_gold`` for the next
    minute (the dbt part of a minute's run: the part an open dashboard could slow, by reading the
    snapshot while dbt runs and by using the same 2 cores) ``--runs`` times with no dashboard and no
    browser, and ``--runs`` times with the page open and refreshing, in alternating blocks (closed, open,
    closed, open) so drift cancels. Each run starts ``--gap-s`` (default: the refresh interval + 2 s) after
    the previous one, in both states, so that, as with real minutes 60 s apart, the page has redrawn the
    previous minute before the next run starts; ``--gap-s 0`` runs them back to back, which makes the
    page's redraw overlap the next run (a pessimistic case).

Also: the snapshot's publication time (``snapshot.publish`` called directly ``--publishes`` times, and as
logged by the builds of (b)), its size, the CPU time the dashboard server and Chromium used during (c)'s
open blocks, and the load average at start and end.

    .venv/bin/python benchmarks/dashboard.py                 # 100 symbols × 1440 minutes (a day)
    .venv/bin/python benchmarks/dashboard.py --quick         # 10 symbols × 60 minutes, few repetitions

Targets: interactive <= 2 s (p95 of the warm loads; the cold load is reported beside it); new value on
screen <= 5 s after the gold_kpi materialization (p95); per-minute run slowed by < 5 % (ratio of p50s).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import pandas as pd  # noqa: E402
from bench_common import emit, summary, tree  # noqa: E402

from stock_platform.producer.sources import simulated_symbols  # noqa: E402
from stock_platform.services.browser import BrowserError, Chromium  # noqa: E402
from stock_platform.services.dashboard_server import running_dashboard  # noqa: E402
from stock_platform.services.gold_seed import Feed, dbt_env, materialize_gold  # noqa: E402
from stock_platform.services.raw_quotes import DUCKDB_RAW_TABLE_DDL, duckdb_rows  # noqa: E402
from stock_platform.settings import gold_snapshot_path  # noqa: E402

TARGETS = {
    "interactive_p95_s": 2.0,
    "gold_kpi_to_screen_p95_s": 5.0,
    "run_slowdown_ratio_p50": 1.05,
}
POLL_S = 0.05
UPDATE_TIMEOUT_S = 60.0
RAW_COLUMNS = ["v", "minute", "object_key", "kafka_partition", "kafka_offset", "loaded_at", "topic"]
PUBLISHED = re.compile(r"gold snapshot for the dashboard published to .* in ([0-9.]+) s")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------------------------------ seed


def append_raw_fast(warehouse: Path, envelopes: list[dict[str, Any]]) -> None:
    """gold_seed.append_raw through a DataFrame: the same rows, ~100× faster than executemany (which
    manages about 700 rows/s, i.e. 20 minutes for a day of 100 symbols)."""
    frame = pd.DataFrame(duckdb_rows(envelopes), columns=RAW_COLUMNS)
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute(DUCKDB_RAW_TABLE_DDL)
        conn.register("seed_rows", frame)
        conn.execute("insert into main.bronze_stock_quotes_raw select * from seed_rows")
        conn.unregister("seed_rows")


def seed(warehouse: Path, symbols: int, minutes: int, end: dt.datetime, every_s: int) -> tuple[Feed, dict]:
    """gold_seed.seeded_warehouse with the fast insert, an hour of quotes at a time."""
    feed = Feed(simulated_symbols(symbols), end - dt.timedelta(minutes=minutes), every_s)
    started = time.perf_counter()
    quotes, left = 0, minutes
    while left > 0:
        chunk = feed.next_minutes(min(60, left))
        append_raw_fast(warehouse, chunk)
        quotes += len(chunk)
        left -= min(60, left)
    inserted = time.perf_counter()
    log(f"  {quotes:,} quotes in the raw table in {inserted - started:.1f} s; building gold ...")
    materialize_gold(warehouse, feed.last_minute_key, views=True)
    built = time.perf_counter()
    return feed, {
        "quotes": quotes,
        "raw_insert_s": round(inserted - started, 2),
        "first_gold_build_s": round(built - inserted, 2),
    }


# -------------------------------------------------------------------------------------- gold, directly


def gold_kpi(snapshot: Path, symbol: str) -> tuple[float, str]:
    """gold_kpi's price and as_of of ``symbol``, from the snapshot the page reads."""
    with duckdb.connect(str(snapshot), read_only=True) as conn:
        price, as_of = conn.execute(
            "select price, strftime(as_of, '%Y-%m-%dT%H:%M:%S') from gold.gold_kpi where symbol = ?", [symbol]
        ).fetchone()  # type: ignore[misc]
    return price, as_of


def chosen_symbol(snapshot: Path) -> str:
    """The page's default symbol: AAPL if present, else the first by name."""
    with duckdb.connect(str(snapshot), read_only=True) as conn:
        symbols = [s for (s,) in conn.execute("select symbol from gold.gold_kpi order by symbol").fetchall()]
    return "AAPL" if "AAPL" in symbols else symbols[0]


def minute_candles(snapshot: Path, symbol: str) -> int:
    with duckdb.connect(str(snapshot), read_only=True) as conn:
        (count,) = conn.execute(
            "select count(*) from gold.gold_candlestick where symbol = ? and grain = 'minute'", [symbol]
        ).fetchone()  # type: ignore[misc]
    return count


@dataclass
class Build:
    wall_s: float
    gold_kpi_event_at: float  # epoch s
    published_s: float | None  # as the run logged it


def build_minute(warehouse: Path, partition_key: str) -> Build:
    """What gold_seed.materialize_gold does, on an instance kept to read the run's event log."""
    import dagster as dg

    from stock_platform.transform.definitions import dbt_model_assets

    with dg.DagsterInstance.ephemeral() as instance, dbt_env(warehouse):
        started = time.perf_counter()
        result = dg.materialize([dbt_model_assets[0]], partition_key=partition_key, instance=instance)
        wall = time.perf_counter() - started
        assert result.success
        event_at, published = None, None
        for entry in instance.all_logs(result.run_id):
            event = entry.dagster_event
            if (
                event is not None
                and event.event_type_value == "ASSET_MATERIALIZATION"
                and event.asset_key == dg.AssetKey("gold_kpi")
            ):
                event_at = entry.timestamp
            match = PUBLISHED.search(entry.user_message or "")
            if match:
                published = float(match.group(1))
    assert event_at is not None, "no gold_kpi materialization in the run"
    return Build(wall, event_at, published)


# -------------------------------------------------------------------------------------------- browser


def card_js(symbol: str) -> str:
    return f"document.querySelector('div.sp-card[data-symbol={json.dumps(symbol)}]')"


def ready_js(symbol: str) -> str:
    """The card, and both charts drawn: their marks (named by the specs' layers) are in the SVG."""
    charts = "document.querySelector('g.candles_marks path') && document.querySelector('g.tiles_marks path')"
    return f"!!({card_js(symbol)} && {charts})"


def card_state_js(symbol: str) -> str:
    return (
        f"(() => {{ const c = {card_js(symbol)}; return c ? "
        "[c.getAttribute('data-price'), c.getAttribute('data-as-of')] : null; })()"
    )


def poll_until(browser: Chromium, expression: str, timeout_s: float) -> Any:
    """Evaluates every POLL_S until truthy; returns the value (BrowserError after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = browser.evaluate(expression)
        except BrowserError:
            value = None  # between documents
        if value:
            return value
        if time.monotonic() > deadline:
            raise BrowserError(
                f"{expression} not true after {timeout_s:.0f} s:\n{browser.page_text()[:2000]}"
            )
        time.sleep(POLL_S)


def timed_load(browser: Chromium, url: str, symbol: str) -> float:
    browser.send("Page.navigate", {"url": "about:blank"})
    poll_until(browser, "location.href === 'about:blank' && document.readyState === 'complete'", 10)
    started = time.perf_counter()
    result = browser.send("Page.navigate", {"url": url})
    if result.get("errorText"):
        raise BrowserError(f"could not open {url}: {result['errorText']}")
    poll_until(browser, ready_js(symbol), 60)
    return time.perf_counter() - started


class CardWatcher(threading.Thread):
    """Polls the page every POLL_S until the card's (data-price, data-as-of) differs from ``before``;
    records when (epoch s) and what it then showed."""

    def __init__(self, browser: Chromium, symbol: str, before: list[str]) -> None:
        super().__init__(daemon=True)
        self.browser, self.js, self.before = browser, card_state_js(symbol), before
        self.seen_at: float | None = None
        self.shown: list[str] | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + UPDATE_TIMEOUT_S
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                state = self.browser.evaluate(self.js)
            except BrowserError:
                state = None
            if state and state != self.before:
                self.seen_at, self.shown = time.time(), state
                return
            time.sleep(POLL_S)


@contextlib.contextmanager
def open_page(warehouse: Path, work: Path, name: str, refresh_s: float, symbol: str) -> Iterator[Any]:
    """The dashboard and a Chromium page showing it, ready; yields (dashboard, browser)."""
    with (
        running_dashboard(warehouse, work / f"{name}-dashboard.log", refresh_seconds=refresh_s) as dashboard,
        Chromium(Path(tempfile.mkdtemp(prefix=f"{name}-chromium-", dir=work))) as browser,
    ):
        yield dashboard, browser


def cpu_seconds(root_pid: int) -> float:
    """User + system CPU seconds of a process tree's live processes."""
    total = 0
    for pid in tree(root_pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


# ---------------------------------------------------------------------------------------------- parts


def measure_loads(browser: Chromium, url: str, symbol: str, loads: int) -> dict:
    cold = timed_load(browser, url, symbol)
    log(f"  cold load {cold:.2f} s")
    warm = []
    for _ in range(loads):
        warm.append(timed_load(browser, url, symbol))
        log(f"  load {warm[-1]:.2f} s")
    return {"cold_s": round(cold, 3), "warm_s": summary(warm), "warm_all_s": [round(x, 3) for x in warm]}


def measure_updates(
    browser: Chromium, warehouse: Path, feed: Feed, symbol: str, appends: int
) -> tuple[dict, list[float]]:
    snapshot = gold_snapshot_path(warehouse)
    from_event, from_publish, from_run_end, walls, published = [], [], [], [], []
    for n in range(appends):
        before = poll_until(browser, card_state_js(symbol), 30)
        append_raw_fast(warehouse, feed.next_minutes(1))
        watcher = CardWatcher(browser, symbol, before)
        watcher.start()
        try:
            build = build_minute(warehouse, feed.last_minute_key)
            run_end = time.time()
            publish_at = os.stat(snapshot).st_mtime_ns / 1e9
            watcher.join(UPDATE_TIMEOUT_S)
        finally:
            watcher.stop.set()
            watcher.join()
        if watcher.seen_at is None or watcher.shown is None:
            raise SystemExit(
                f"append {n + 1}: the card of {symbol} did not change in {UPDATE_TIMEOUT_S:.0f} s"
            )
        price, as_of = gold_kpi(snapshot, symbol)
        if float(watcher.shown[0]) != price or watcher.shown[1] != as_of:
            raise SystemExit(
                f"append {n + 1}: the card shows {watcher.shown}, gold_kpi holds {[price, as_of]}"
            )
        from_event.append(watcher.seen_at - build.gold_kpi_event_at)
        from_publish.append(watcher.seen_at - publish_at)
        from_run_end.append(watcher.seen_at - run_end)
        walls.append(build.wall_s)
        if build.published_s is not None:
            published.append(build.published_s)
        log(
            f"  append {n + 1}: on screen {from_event[-1]:.2f} s after gold_kpi materialized, "
            f"{from_publish[-1]:.2f} s after the snapshot was published (run {build.wall_s:.2f} s)"
        )
    return {
        "from_gold_kpi_materialization_s": summary(from_event),
        "from_snapshot_publication_s": summary(from_publish),
        "from_run_end_s": summary(from_run_end),
        "build_wall_s": summary(walls),
    }, published


def measure_runs(
    warehouse: Path, work: Path, feed: Feed, symbol: str, runs: int, refresh_s: float, gap_s: float
) -> dict:
    first = runs // 2 or 1
    blocks = [("closed", first), ("open", first), ("closed", runs - first), ("open", runs - first)]
    walls: dict[str, list[float]] = {"closed": [], "open": []}
    cpu = {"dashboard_s": 0.0, "chromium_s": 0.0, "open_wall_s": 0.0}
    for index, (state, count) in enumerate(blocks):
        if count <= 0:
            continue

        def run_block(state: str = state, count: int = count) -> None:
            for _ in range(count):
                append_raw_fast(warehouse, feed.next_minutes(1))
                time.sleep(gap_s)
                started = time.perf_counter()
                materialize_gold(warehouse, feed.last_minute_key)
                walls[state].append(time.perf_counter() - started)
                log(f"  {state}: run {walls[state][-1]:.2f} s")

        if state == "closed":
            run_block()
            continue
        with open_page(warehouse, work, f"runs{index}", refresh_s, symbol) as (dashboard, browser):
            browser.navigate(dashboard.url)
            poll_until(browser, ready_js(symbol), 60)
            assert browser.process is not None
            cpu_before = (cpu_seconds(dashboard.pid), cpu_seconds(browser.process.pid), time.perf_counter())
            run_block()
            cpu["dashboard_s"] += cpu_seconds(dashboard.pid) - cpu_before[0]
            cpu["chromium_s"] += cpu_seconds(browser.process.pid) - cpu_before[1]
            cpu["open_wall_s"] += time.perf_counter() - cpu_before[2]
    closed, opened = summary(walls["closed"]), summary(walls["open"])
    ratio = round(opened["p50"] / closed["p50"], 3) if closed["p50"] and opened["p50"] else None
    return {
        "blocks": [f"{state} x{count}" for state, count in blocks if count > 0],
        "gap_between_runs_s": gap_s,
        "closed_s": closed,
        "open_s": opened,
        "open_over_closed_p50": ratio,
        "cpu_while_open_s": {name: round(value, 2) for name, value in cpu.items()},
    }


def measure_publish(warehouse: Path, work: Path, times: int) -> dict:
    from stock_platform.dashboard.snapshot import publish

    scratch = work / "scratch" / "publish-timing.gold-snapshot.duckdb"
    seconds, rows = [], {}
    for _ in range(times):
        published = publish(warehouse, scratch)
        seconds.append(published.seconds)
        rows = published.rows
    return {
        "direct_s": summary(seconds),
        "rows": rows,
        "snapshot_bytes": scratch.stat().st_size,
        "warehouse_bytes": warehouse.stat().st_size,
    }


# ----------------------------------------------------------------------------------------------- main


def targets_table(report: dict) -> str:
    loads, updates, runs = report["page_load"], report["gold_to_screen"], report["per_minute_run"]
    rows = [
        ("page load to interactive, cold (first) s", loads["cold_s"], "-"),
        ("page load to interactive p50 s", loads["warm_s"]["p50"], "<= 2"),
        ("page load to interactive p95 s", loads["warm_s"]["p95"], "<= 2"),
        ("gold_kpi materialized -> on screen p50 s", updates["from_gold_kpi_materialization_s"]["p50"], "<= 5"),
        ("gold_kpi materialized -> on screen p95 s", updates["from_gold_kpi_materialization_s"]["p95"], "<= 5"),
        ("snapshot published -> on screen p50 s", updates["from_snapshot_publication_s"]["p50"], "-"),
        ("snapshot published -> on screen p95 s", updates["from_snapshot_publication_s"]["p95"], "-"),
        ("per-minute dbt run, dashboard closed p50/p95 s",
         f"{runs['closed_s']['p50']} / {runs['closed_s']['p95']}", "-"),
        ("per-minute dbt run, dashboard open p50/p95 s", f"{runs['open_s']['p50']} / {runs['open_s']['p95']}", "-"),
        ("per-minute run open/closed (p50s)", runs["open_over_closed_p50"], "< 1.05"),
        ("snapshot publish p50 s (direct)", report["snapshot"]["direct_s"]["p50"], "-"),
        ("snapshot publish p50 s (in runs)", report["snapshot"]["in_runs_s"]["p50"], "-"),
    ]  # fmt: skip
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'figure'.ljust(width)}  value            target"]
    lines += [f"{name.ljust(width)}  {str(value).ljust(15)}  {target}" for name, value, target in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--minutes", type=int, default=1440, help="minutes of history seeded (1440: a day)")
    parser.add_argument("--every-s", type=int, default=10, help="seconds between a symbol's quotes")
    parser.add_argument("--loads", type=int, default=10, help="page loads after the first (cold) one")
    parser.add_argument("--appends", type=int, default=10, help="minutes appended for gold -> screen")
    parser.add_argument("--runs", type=int, default=8, help="per-minute runs timed per state (closed, open)")
    parser.add_argument(
        "--gap-s", type=float, default=None, help="pause before each run of (c) (default: --refresh + 2)"
    )
    parser.add_argument("--publishes", type=int, default=5, help="direct snapshot publications timed")
    parser.add_argument("--refresh", type=float, default=3.0, help="DASHBOARD_REFRESH_SECONDS (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help="10 symbols × 60 minutes, 3 loads/appends, 2 runs"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.symbols, args.minutes, args.loads, args.appends, args.runs, args.publishes = 10, 60, 3, 3, 2, 3

    load_start = load_average()
    log(f"load average at start: {load_start}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="dashboard_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    warehouse = work / "warehouse.duckdb"
    snapshot = gold_snapshot_path(warehouse)

    # End the history before midnight UTC by the minutes appended later, so they stay on the same day.
    headroom = args.appends + 2 * args.runs + 2
    midnight = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = midnight - dt.timedelta(minutes=headroom)
    log(f"seeding {args.symbols} symbols × {args.minutes} minutes up to {end:%Y-%m-%d %H:%M} UTC in {work}")
    feed, seeded = seed(warehouse, args.symbols, args.minutes, end, args.every_s)
    symbol = chosen_symbol(snapshot)
    candles = minute_candles(snapshot, symbol)
    log(f"  gold built in {seeded['first_gold_build_s']} s; {symbol} has {candles} 1-minute candles today")

    log("snapshot publication, direct ...")
    snapshot_figures = measure_publish(warehouse, work, args.publishes)

    log(f"(a) page loads, (b) gold -> screen, dashboard refreshing every {args.refresh:g} s ...")
    with open_page(warehouse, work, "main", args.refresh, symbol) as (dashboard, browser):
        loads = measure_loads(browser, dashboard.url, symbol, args.loads)
        updates, published_in_runs = measure_updates(browser, warehouse, feed, symbol, args.appends)
        exceptions = list(browser.exceptions)
    snapshot_figures["in_runs_s"] = summary(published_in_runs)

    log("(c) per-minute runs, dashboard closed vs open ...")
    gap_s = args.refresh + 2 if args.gap_s is None else args.gap_s
    runs = measure_runs(warehouse, work, feed, symbol, args.runs, args.refresh, gap_s)

    load_end = load_average()
    log(f"load average at end: {load_end}")
    report: dict[str, Any] = {
        "symbols": args.symbols,
        "minutes": args.minutes,
        "every_s": args.every_s,
        "refresh_s": args.refresh,
        "chosen_symbol": symbol,
        "chosen_symbol_minute_candles": candles,
        "workdir": str(work),
        "cpus": os.cpu_count(),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "seed": seeded,
        "snapshot": snapshot_figures,
        "page_load": loads,
        "gold_to_screen": updates,
        "per_minute_run": runs,
        "page_exceptions": exceptions,
        "targets": TARGETS,
    }
    report["meets_targets"] = {
        "interactive_p95_s": (loads["warm_s"]["p95"] or 1e9) <= TARGETS["interactive_p95_s"],
        "gold_kpi_to_screen_p95_s": (updates["from_gold_kpi_materialization_s"]["p95"] or 1e9)
        <= TARGETS["gold_kpi_to_screen_p95_s"],
        "run_slowdown_ratio_p50": (runs["open_over_closed_p50"] or 1e9) < TARGETS["run_slowdown_ratio_p50"],
    }
    print(targets_table(report), flush=True)
    emit(report, args.out)


if __name__ == "__main__":
    main()
