"""`stock-platform rebuild`: the raw table, silver and gold rebuilt from the lake's raw objects.

The lake is the source of truth (docs/contracts.md): every loaded minute's raw object stays there, so a
warehouse that lost minutes (a deleted DuckDB file, a dropped or restored Snowflake table) is made whole
again from it. The command

1. lists the lake's minutes of the topic, all of them or those in ``--from``/``--to`` (inclusive);
2. loads them with the same ``Warehouse.load_minutes`` as the ``raw_quote_table`` asset, ``--batch``
   minutes per transaction, each minute replacing its (topic, minute) slice and writing the ledger;
3. runs dbt: ``dbt build --full-refresh`` after a rebuild of everything, else the incremental build over
   the rebuilt window (the same window variables Dagster's per-minute runs pass).

It reads Kafka's topic name only: no offset is read or committed. Every step replaces by key, so running
it twice leaves the same rows. ``--check`` only compares the lake with the warehouse's ledger.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from stock_platform.ingestion import lake
from stock_platform.partitions import minute_window
from stock_platform.resources.object_store import ObjectStore
from stock_platform.resources.warehouse import DuckDBWarehouse, MinuteFile, Warehouse

DEFAULT_BATCH_MINUTES = 60  # as CATCH_UP_POLICY: the minutes of one catch-up run, one transaction


@dataclass
class RebuildReport:
    topic: str
    minutes: list[str] = field(default_factory=list)
    rows: int = 0
    batches: int = 0
    not_in_lake: list[str] = field(default_factory=list)  # in the ledger, but no raw object
    dbt: str = "skipped"
    dbt_exit_code: int = 0


def _window(first: str | None, last: str | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    return (
        minute_window(first)[0] if first else None,
        minute_window(last)[1] if last else None,
    )


def rebuild_raw(
    store: ObjectStore,
    warehouse: Warehouse,
    topic: str,
    first: str | None = None,
    last: str | None = None,
    batch_minutes: int = DEFAULT_BATCH_MINUTES,
    log: Callable[[str], None] = print,
) -> RebuildReport:
    """Reload the lake's minutes [first, last] (None: unbounded) of ``topic`` into the raw table."""
    if batch_minutes < 1:
        raise ValueError("batch_minutes must be at least 1")
    start, end = _window(first, last)
    minutes = lake.lake_minutes(store, topic, start, end)
    report = RebuildReport(topic)
    keys = list(minutes)
    for i in range(0, len(keys), batch_minutes):
        batch = keys[i : i + batch_minutes]
        with ExitStack() as stack:
            files = [
                MinuteFile(key, minutes[key], stack.enter_context(store.local_file(minutes[key])))
                for key in batch
            ]
            loaded = warehouse.load_minutes(topic, files)
        report.batches += 1
        report.minutes.extend(batch)
        report.rows += sum(loaded.values())
        log(f"  loaded {batch[0]} .. {batch[-1]}: {len(batch)} minute(s), {sum(loaded.values())} rows")
    report.not_in_lake = sorted(set(warehouse.loaded_minutes(topic, start, end)) - set(minutes))
    return report


def dbt_command(full_refresh: bool, target_path: str) -> list[str]:
    from stock_platform.transform.project import DBT_PROJECT_DIR, dbt_executable
    from stock_platform.transform.window import DBT_BUILD_ARGS

    return [
        dbt_executable(),
        *DBT_BUILD_ARGS,
        *(["--full-refresh"] if full_refresh else []),
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        # Its own target folder: the code location reads target/manifest.json, which this must not
        # rewrite under a running Dagster.
        "--target-path",
        target_path,
    ]


def dbt_environment(
    warehouse: Warehouse, window: tuple[dt.datetime, dt.datetime] | None, base: Mapping[str, str]
) -> dict[str, str]:
    """dbt's environment: the caller's (DBT_TARGET, SNOWFLAKE_*), the DuckDB file the load wrote, and
    the window of an incremental build (none for a full refresh)."""
    from stock_platform.transform.window import WINDOW_ENV, dbt_window_env

    env = {k: v for k, v in base.items() if k not in WINDOW_ENV.values()}
    if isinstance(warehouse, DuckDBWarehouse):
        env["DUCKDB_PATH"] = os.path.abspath(warehouse.path)
        env.setdefault("DBT_TARGET", "duckdb")
    if window is not None:
        env.update(dbt_window_env(*window))
    return env


def run_dbt(
    warehouse: Warehouse,
    window: tuple[dt.datetime, dt.datetime] | None,
    base_env: Mapping[str, str] | None = None,
) -> int:
    """`dbt build` after a rebuild: a full refresh (window None) or the incremental build of the window."""
    from stock_platform.transform.project import DBT_PROJECT_DIR

    env = dbt_environment(warehouse, window, os.environ if base_env is None else base_env)
    with tempfile.TemporaryDirectory(prefix="stock-platform-rebuild-dbt-") as target_path:
        command = dbt_command(window is None, target_path)
        sys.stdout.flush()
        return subprocess.run(command, cwd=DBT_PROJECT_DIR, env=env, check=False).returncode


def rebuild(
    store: ObjectStore,
    warehouse: Warehouse,
    topic: str,
    first: str | None = None,
    last: str | None = None,
    batch_minutes: int = DEFAULT_BATCH_MINUTES,
    dbt: bool = True,
    base_env: Mapping[str, str] | None = None,
    log: Callable[[str], None] = print,
) -> RebuildReport:
    """The raw table from the lake (all of it, or [first, last]), then silver and gold."""
    scope = f"{first or 'the first lake minute'} to {last or 'the last'}"
    log(f"rebuilding topic {topic!r} from the lake, {scope}")
    report = rebuild_raw(store, warehouse, topic, first, last, batch_minutes, log)
    log(
        f"raw table: {len(report.minutes)} minute(s), {report.rows} rows in {report.batches} "
        f"transaction(s)" + (f" ({report.minutes[0]} to {report.minutes[-1]})" if report.minutes else "")
    )
    if report.not_in_lake:
        log(
            f"warning: {len(report.not_in_lake)} loaded minute(s) have no raw object in the lake "
            f"({report.not_in_lake[0]} to {report.not_in_lake[-1]}); left as they are"
        )
    if not dbt:
        return report
    if first is None and last is None:
        report.dbt = "dbt build --full-refresh"
        window = None
    elif report.minutes:
        start = minute_window(first or report.minutes[0])[0]
        end = minute_window(last or report.minutes[-1])[1]
        report.dbt = f"dbt build, window {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
        window = (start, end)
    else:
        log("dbt: skipped, no lake minute in the range")
        return report
    log(f"dbt: {report.dbt}")
    report.dbt_exit_code = run_dbt(warehouse, window, base_env)
    log(f"dbt: {'done' if report.dbt_exit_code == 0 else f'failed (exit {report.dbt_exit_code})'}")
    if report.dbt_exit_code == 0 and isinstance(warehouse, DuckDBWarehouse):
        from stock_platform.dashboard.snapshot import try_publish
        from stock_platform.settings import gold_snapshot_path

        path = Path(warehouse.path).resolve()
        try_publish(path, gold_snapshot_path(path), log, lambda message: log(f"warning: {message}"))
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from", dest="first", type=lake.parse_minute_key, help="first minute, e.g. 2026-11-28-08:00"
    )
    parser.add_argument("--to", dest="last", type=lake.parse_minute_key, help="last minute, inclusive")
    parser.add_argument("--topic", help="topic whose raw objects to load (default: KAFKA_TOPIC)")
    parser.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_BATCH_MINUTES,
        help=f"minutes per load transaction (default {DEFAULT_BATCH_MINUTES})",
    )
    parser.add_argument("--no-dbt", action="store_true", help="rebuild the raw table only")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only compare the lake with the warehouse's ledger (whole lake unless --from/--to); "
        "exit 1 when minutes are missing",
    )


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    import dagster as dg

    from stock_platform.settings import SettingsError, load_settings

    env = os.environ if env is None else env
    if args.first and args.last and args.first > args.last:
        print(f"--from {args.first} is after --to {args.last}", file=sys.stderr)
        return 2
    try:
        # Imported here: the module wires the code location's Definitions from the environment on import.
        from stock_platform.ingestion.definitions import ingestion_resources

        # The same wiring as the code location (OBJECT_STORE, WAREHOUSE, ...); EnvVars resolve here as
        # in a run. Kafka is only asked for its topic name.
        resources = ingestion_resources(load_settings(env))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with dg.build_resources(resources) as built:
        store: ObjectStore = built.object_store
        warehouse: Warehouse = built.warehouse
        topic: str = args.topic or built.kafka.topic
        if args.check:
            start, end = _window(args.first, args.last)
            result = lake.coverage(store, warehouse, topic, start, end)
            print(result.summary())
            if not result.passed:
                missing = result.missing
                shown = missing if len(missing) <= 20 else [*missing[:10], "...", *missing[-10:]]
                print("missing: " + ", ".join(shown))
            return 0 if result.passed else 1
        report = rebuild(
            store, warehouse, topic, args.first, args.last, args.batch, dbt=not args.no_dbt, base_env=env
        )
    return 0 if report.dbt_exit_code == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stock-platform rebuild", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
