"""Run the benchmark suite, one benchmark at a time, and print a summary table of figures and targets.

Each benchmark runs as its own process (each starts and stops its own Kafka broker and, for freshness
and catch-up, its own Dagster daemon), prints its JSON as it finishes, and the summary table (figure,
value, target, met?) closes the output. Everything is also written to
``$STOCK_PLATFORM_HOME/benchmarks/latest.json`` (default ``.stock_platform/``, git-ignored).

    .venv/bin/python benchmarks/run_all.py                       # all, full size (about 70 min)
    .venv/bin/python benchmarks/run_all.py --quick               # all, shortened (about 15 min)
    .venv/bin/python benchmarks/run_all.py --only sensor_tick,freshness

Run it on an otherwise idle machine: the figures are wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent


@dataclass(frozen=True)
class Figure:
    name: str
    get: Callable[[dict], Any]
    target: str
    met: Callable[[Any], bool] | None = None


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    figures: tuple[Figure, ...]


def _at(*path: Any) -> Callable[[dict], Any]:
    def get(doc: dict) -> Any:
        for part in path:
            doc = doc[part]
        return doc

    return get


def _trials(doc: dict, key: str) -> str:
    return ", ".join(f"{t['batch_minutes']}: {t[key]}" for t in doc["trials"])


def _worst(doc: dict, key: str) -> float:
    return max(t[key] for t in doc["trials"])


BENCHMARKS = (
    Benchmark(
        "producer", "producer_throughput.py", (), ("--duration", "15"),
        (
            Figure("producer messages/s (10,000 symbols)", _at("messages_per_s"), ">= 100,000", lambda v: v >= 100_000),
            Figure("producer peak RSS MiB", _at("peak_rss_mib"), "< 300", lambda v: v < 300),
        ),
    ),
    Benchmark(
        "ingest_minute", "ingest_minute.py", (), ("--large-quotes", "200000", "--small-runs", "3"),
        (
            Figure("ingest small minute: raw object + raw table s", _at("small_minute", "raw_object_plus_raw_table_s_median"), "< 0.5", lambda v: v < 0.5),
            Figure("ingest large minute quotes/s", _at("large_minute", "pipeline", "quotes_per_s"), ">= 150,000", lambda v: v >= 150_000),
            Figure("bare consumer quotes/s (librdkafka defaults)", _at("large_minute", "bare_consumer", "quotes_per_s"), "-"),
            Figure("bare consumer quotes/s (the pipeline's read settings)", _at("large_minute", "bare_consumer_read_tuning", "quotes_per_s"), "-"),
            Figure("ingest / bare consumer (defaults)", _at("large_minute", "pipeline_over_bare"), ">= 0.7", lambda v: v >= 0.7),
            Figure("ingest / bare consumer (same read settings)", _at("large_minute", "pipeline_over_bare_read_tuning"), "-"),
        ),
    ),
    Benchmark(
        "dbt_incremental", "dbt_incremental.py", (), ("--minutes", "60", "--runs", "2"),
        (
            Figure("dbt per-minute build (CLI) median s", _at("per_minute_run_median_s"), "< 8", lambda v: v < 8),
        ),
    ),
    Benchmark(
        "sensor_tick", "sensor_tick.py", (), ("--ticks", "20", "--runs", "1000", "--materializations", "50"),
        (
            Figure("sensor tick p50 s (1 y partitions, 10k symbols)", _at("ticks_fresh_cursor_s", "p50"), "< 2", lambda v: v < 2),
            Figure("sensor tick p95 s", _at("ticks_fresh_cursor_s", "p95"), "< 2", lambda v: v < 2),
            Figure("sensor tick max s", _at("ticks_fresh_cursor_s", "max"), "< 2", lambda v: v < 2),
            Figure("partition enumerations in ticks", lambda d: sum(d["partition_enumerations_during_ticks"].values()), "0", lambda v: v == 0),
        ),
    ),
    Benchmark(
        "freshness", "freshness.py", (), ("--minutes", "3"),
        (
            Figure("per-minute run start->end p50 s", _at("steady_state", "run_start_to_end_s", "p50"), "-"),
            Figure("per-minute run start->end p95 s", _at("steady_state", "run_start_to_end_s", "p95"), "<= 5", lambda v: v <= 5),
            Figure("per-minute run requested->end p95 s", _at("steady_state", "run_requested_to_end_s", "p95"), "-"),
            Figure("minute close -> gold p50 s", _at("steady_state", "minute_close_to_gold_s", "p50"), "<= 8", lambda v: v <= 8),
            Figure("minute close -> gold p95 s", _at("steady_state", "minute_close_to_gold_s", "p95"), "<= 15", lambda v: v <= 15),
            Figure("quote -> gold p50 s", _at("steady_state", "quote_to_gold_s", "p50"), "<= 40", lambda v: v <= 40),
            Figure("quote -> gold p95 s", _at("steady_state", "quote_to_gold_s", "p95"), "<= 60", lambda v: v <= 60),
            Figure("quote -> minute close p50 s (the floor)", _at("steady_state", "quote_to_minute_close_s", "p50"), "-"),
            Figure("daemon sensor tick p95 s (ticks requesting no run)", _at("daemon_sensor_tick_s", "p95"), "< 2", lambda v: v < 2),
        ),
    ),
    Benchmark(
        "catch_up", "catch_up.py", (), ("--hours", "2", "--batch-minutes", "60"),
        (
            Figure("catch-up wall s by batch minutes", lambda d: _trials(d, "wall_s_from_daemon_start"), "<= 300",
                   lambda v: all(float(x.split(": ")[1]) <= 300 for x in v.split(", "))),
            Figure("catch-up peak single-process RSS MiB (worst)", lambda d: _worst(d, "peak_single_process_rss_mib"), "-"),
            Figure("catch-up peak tree-sum RSS MiB (worst)", lambda d: _worst(d, "peak_tree_sum_rss_mib"), "< 2048", lambda v: v < 2048),
            Figure("catch-up all committed", lambda d: all(t["completed"] for t in d["trials"]), "true", bool),
        ),
    ),
    Benchmark(
        "dashboard", "dashboard.py", (), ("--quick",),
        (
            Figure("dashboard load to interactive p95 s", _at("page_load", "warm_s", "p95"), "<= 2", lambda v: v <= 2),
            Figure("dashboard gold_kpi -> on screen p95 s", _at("gold_to_screen", "from_gold_kpi_materialization_s", "p95"), "<= 5", lambda v: v <= 5),
            Figure("per-minute run, dashboard open / closed (p50)", _at("per_minute_run", "open_over_closed_p50"), "< 1.05", lambda v: v < 1.05),
            Figure("gold snapshot publication p50 s (in runs)", _at("snapshot", "in_runs_s", "p50"), "-"),
        ),
    ),
)  # fmt: skip


def last_json(text: str) -> dict:
    """The last JSON object printed (a benchmark may print log lines before it)."""
    starts = [i for i, ch in enumerate(text) if ch == "{" and (i == 0 or text[i - 1] == "\n")]
    for start in reversed(starts):
        try:
            return json.loads(text[start:])
        except json.JSONDecodeError:
            continue
    raise ValueError("no JSON document in the output")


def run_one(bench: Benchmark, quick: bool, timeout_s: float) -> tuple[dict | None, str | None, float]:
    argv = [sys.executable, str(HERE / bench.script), *(bench.quick if quick else bench.full)]
    print(f"\n=== {bench.name}: {' '.join(argv[1:])}", flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout_s:.0f} s", time.monotonic() - started
    seconds = time.monotonic() - started
    try:
        doc = last_json(done.stdout)
    except ValueError:
        return None, f"exit {done.returncode}, no JSON; stderr tail:\n{done.stderr[-2000:]}", seconds
    print(json.dumps(doc, indent=2), flush=True)
    return doc, None, seconds


def rows_for(bench: Benchmark, doc: dict | None, error: str | None) -> list[dict]:
    rows = []
    for figure in bench.figures:
        value: Any = None
        met: bool | None = None
        if doc is not None:
            try:
                value = figure.get(doc)
                met = figure.met(value) if figure.met is not None and value is not None else None
            except (KeyError, TypeError, IndexError, ValueError):
                value = None
        rows.append({"benchmark": bench.name, "figure": figure.name, "value": value, "target": figure.target,
                     "met": met, "error": error})  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    def cell(row: dict) -> list[str]:
        met = "-" if row["met"] is None else ("yes" if row["met"] else "NO")
        value = "ERROR" if row["value"] is None and row["error"] else str(row["value"])
        return [row["figure"], value, row["target"], met]

    body = [["figure", "value", "target", "met?"], *[cell(r) for r in rows]]
    widths = [max(len(line[i]) for line in body) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    names = [b.name for b in BENCHMARKS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default=",".join(names), help=f"comma-separated subset of {','.join(names)}"
    )
    parser.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    parser.add_argument("--quick", action="store_true", help="shortened sizes (figures indicative only)")
    parser.add_argument("--timeout-min", type=float, default=60.0, help="per benchmark")
    parser.add_argument(
        "--out", type=Path, default=None, help="default $STOCK_PLATFORM_HOME/benchmarks/latest.json"
    )
    args = parser.parse_args()

    chosen = [n for n in args.only.split(",") if n and n not in args.skip.split(",")]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(names)}")

    results: dict[str, Any] = {}
    rows: list[dict] = []
    for bench in BENCHMARKS:
        if bench.name not in chosen:
            continue
        doc, error, seconds = run_one(bench, args.quick, args.timeout_min * 60)
        if error:
            print(f"{bench.name} failed: {error}", file=sys.stderr, flush=True)
        results[bench.name] = {"result": doc, "error": error, "seconds": round(seconds, 1),
                               "args": list(bench.quick if args.quick else bench.full)}  # fmt: skip
        rows += rows_for(bench, doc, error)

    print("\n" + table(rows))
    home = Path(os.environ.get("STOCK_PLATFORM_HOME", PROJECT_ROOT / ".stock_platform"))
    out = args.out or home / "benchmarks" / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"quick": args.quick, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "cpu_count": os.cpu_count(), "summary": rows, "results": results}, indent=2, default=str))  # fmt: skip
    print(f"\nwritten to {out}")
    return 0 if all(r["met"] is not False and not r["error"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
