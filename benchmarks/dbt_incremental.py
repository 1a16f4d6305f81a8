"""Benchmark: the per-minute incremental dbt run (silver + gold) on DuckDB, and dbt's fixed start-up.

History: one trading day (390 minutes) of 100 symbols at one quote per second each (2.34 million raw
rows), generated straight into DuckDB's raw table in the contract's envelope layout. The last few minutes
are held back and then arrive one at a time; each arrival is followed by the run Dagster makes for that
minute's partition: `dbt build` of every model and its data tests, as a subprocess, with the window in
the environment exactly as the Dagster asset passes it (stock_platform.transform.window).

Reported (JSON on stdout):
- `per_minute_run_s`: wall time of each per-minute `dbt build`; the target is < 8 s;
- `dbt_execution_s`: dbt's own elapsed time for the models and tests (run_results.json);
- `fixed_startup_s`: the rest, i.e. interpreter + imports + (partial) parsing + adapter set-up;
- `with_vars_*`: the same with the window as `--vars`, which makes dbt re-parse the whole project;
- `in_process_*`: the same minutes run through dbt's programmatic `dbtRunner` in one warm process with a
  manifest parsed once and reused: the floor that a long-lived runner could reach.

Usage: python benchmarks/dbt_incremental.py [--symbols 100] [--minutes 390] [--runs 3] [--workdir DIR]
       [--project-dir DIR]   (another copy of dbt_project/, to compare a change with what it replaces)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from stock_platform.resources.warehouse import DuckDBWarehouse  # noqa: E402
from stock_platform.transform.project import DBT_PROJECT_DIR, dbt_executable  # noqa: E402
from stock_platform.transform.window import DBT_BUILD_ARGS, dbt_build_args, dbt_window_env  # noqa: E402

SESSION_OPEN = dt.datetime(2026, 11, 27, 14, 30, tzinfo=dt.UTC)  # 09:30 New York


def insert_minutes(conn: duckdb.DuckDBPyConnection, symbols: int, first: int, last: int) -> None:
    """Raw rows for minutes [first, last) after the open: one quote per symbol per second."""
    open_s = int(SESSION_OPEN.timestamp())
    DuckDBWarehouse.ensure_table(conn)  # the production layout of the raw table
    conn.execute(
        f"""
        insert into main.bronze_stock_quotes_raw
        with q as (
            select s, i, 'S' || lpad(cast(s as varchar), 4, '0') as symbol,
                   {open_s} + i as t, ({open_s} + i) * 1000 + 250 + s as fetched,
                   round(100 + s + 5 * sin(i / 600.0 + s) + ((i * 7919 + s * 104729) % 100) / 100.0, 2) as c
            from range({symbols}) r(s), range({first * 60}, {last * 60}) k(i)
        ), e as (
            select *, make_timestamp((fetched // 60000) * 60000 * 1000) as minute, s % 4 as part,
                   i * {symbols} + s as off
            from q
        )
        select json_object(
                   'minute', strftime(minute, '%Y-%m-%dT%H:%M:%SZ'), 'topic', 'stock-quotes',
                   'kafka_partition', part, 'kafka_offset', off, 'kafka_timestamp_ms', fetched,
                   'object_key', 'benchmark',
                   'quote', json_object(
                       'schema_version', 1, 'symbol', symbol, 'c', c, 'd', c - 100, 'dp', c - 100,
                       'h', 250.0, 'l', 50.0, 'o', 100.0, 'pc', 100.0, 't', t, 'fetched_at', fetched,
                       'source', 'simulated', 'producer_run_id', 'benchmark', 'seq', i * {symbols} + s)),
               minute, 'benchmark', part, off, minute, 'stock-quotes'
        from e
        order by minute
        """
    )


def minute_window(n: int) -> tuple[dt.datetime, dt.datetime]:
    start = SESSION_OPEN + dt.timedelta(minutes=n)
    return start, start + dt.timedelta(minutes=1)


def run_dbt_subprocess(
    args: list[str], env: dict[str, str], target: Path, project_dir: Path = DBT_PROJECT_DIR
) -> tuple[float, float]:
    """(wall seconds, dbt's own elapsed seconds) of one dbt CLI invocation."""
    started = time.perf_counter()
    result = subprocess.run(
        [dbt_executable(), *args, "--target-path", str(target)],
        cwd=project_dir, env={**os.environ, **env}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"dbt failed:\n{result.stdout[-4000:]}")
    elapsed = json.loads((target / "run_results.json").read_text())["elapsed_time"]
    return wall, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--minutes", type=int, default=390)
    parser.add_argument(
        "--runs", type=int, default=3, help="per-minute runs timed (subprocess and in-process)"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--project-dir", type=Path, default=DBT_PROJECT_DIR, help="dbt project (e.g. a copy of an older one)"
    )
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dbt_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / "warehouse.duckdb"
    db_path.unlink(missing_ok=True)
    env = {"DBT_TARGET": "duckdb", "DUCKDB_PATH": str(db_path)}
    held_back = 3 * args.runs
    history = args.minutes - held_back

    started = time.perf_counter()
    with duckdb.connect(str(db_path)) as conn:
        insert_minutes(conn, args.symbols, 0, history)
    generate_s = time.perf_counter() - started
    initial_wall, _ = run_dbt_subprocess(
        ["build", "--exclude-resource-type", "unit_test"], env, workdir / "target_initial", args.project_dir
    )

    # Per-minute runs as Dagster makes them: a new minute lands, then `dbt build` for its window.
    walls, elapsed = [], []
    for n in range(history, history + args.runs):
        with duckdb.connect(str(db_path)) as conn:
            insert_minutes(conn, args.symbols, n, n + 1)
        window_env = {**env, **dbt_window_env(*minute_window(n))}
        wall, inner = run_dbt_subprocess(
            DBT_BUILD_ARGS, window_env, workdir / "target_minute", args.project_dir
        )
        walls.append(wall)
        elapsed.append(inner)

    # The same with the window as --vars: a full re-parse every minute.
    vars_walls, vars_elapsed = [], []
    for n in range(history + args.runs, history + 2 * args.runs):
        with duckdb.connect(str(db_path)) as conn:
            insert_minutes(conn, args.symbols, n, n + 1)
        wall, inner = run_dbt_subprocess(
            dbt_build_args(*minute_window(n)), env, workdir / "target_vars", args.project_dir
        )
        vars_walls.append(wall)
        vars_elapsed.append(inner)

    # The same with dbt's programmatic runner, warm, with a manifest parsed once.
    os.environ.update(env)
    os.chdir(args.project_dir)
    from dbt.cli.main import dbtRunner  # noqa: PLC0415 (import cost is what start-up measures)

    target = str(workdir / "target_in_process")
    parse_started = time.perf_counter()
    manifest = dbtRunner().invoke(["parse", "--target-path", target, "--quiet"]).result
    parse_s = time.perf_counter() - parse_started
    runner = dbtRunner(manifest=manifest)
    in_process = []
    for n in range(history + 2 * args.runs, history + 3 * args.runs):
        with duckdb.connect(str(db_path)) as conn:
            insert_minutes(conn, args.symbols, n, n + 1)
        run_started = time.perf_counter()
        res = runner.invoke([*dbt_build_args(*minute_window(n)), "--target-path", target, "--quiet"])
        in_process.append(time.perf_counter() - run_started)
        if not res.success:
            raise SystemExit(f"in-process dbt build failed: {res.exception}")

    # Same configuration as dbt-duckdb's still-open connection in this process (DuckDB requires it).
    with duckdb.connect(str(db_path)) as conn:
        raw_rows = conn.execute("select count(*) from main.bronze_stock_quotes_raw").fetchone()[0]
        silver_rows = conn.execute("select count(*) from silver.silver_quotes").fetchone()[0]
    if silver_rows != raw_rows:
        raise SystemExit(f"silver has {silver_rows} rows for {raw_rows} distinct raw quotes")

    report = {
        "symbols": args.symbols,
        "minutes": args.minutes,
        "raw_rows": raw_rows,
        "generate_history_s": round(generate_s, 2),
        "initial_full_build_s": round(initial_wall, 2),
        "per_minute_run_s": [round(w, 2) for w in walls],
        "per_minute_run_median_s": round(statistics.median(walls), 2),
        "dbt_execution_s": [round(e, 2) for e in elapsed],
        "fixed_startup_s": [round(w - e, 2) for w, e in zip(walls, elapsed, strict=True)],
        "fixed_startup_median_s": round(
            statistics.median(w - e for w, e in zip(walls, elapsed, strict=True)), 2
        ),
        "target_s": 8.0,
        "meets_target": max(walls) < 8.0,
        "with_vars_per_minute_run_s": [round(w, 2) for w in vars_walls],
        "with_vars_fixed_startup_s": [round(w - e, 2) for w, e in zip(vars_walls, vars_elapsed, strict=True)],
        "in_process_parse_once_s": round(parse_s, 2),
        "in_process_per_minute_run_s": [round(t, 2) for t in in_process],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
