"""The gold snapshot: a small read-only DuckDB file of what the dashboard shows, published after each gold
build on DuckDB.

Why a snapshot: a DuckDB file has one writing process and, while it is open for writing, no readers in
other processes (and a reader holding it would make the next run wait for its lock). Reading the
warehouse directly would therefore either block the pipeline or fail while a run writes. Instead the run
that built gold, right after dbt released the warehouse, copies the rows the dashboard shows into a new
file and renames it over the old one. A reader keeps the file it opened (a rename never changes an open
file), sees the new one on its next open, and never holds anything a run needs. The copy is bounded
(gold_kpi, gold_treechart, the current day's 1-minute candles and the last weeks' daily candles), so it
costs the same on day 300 as on day 1.

Publication never fails a run: any error is returned to the caller, which logs it; the next minute's
run publishes again.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stock_platform.dashboard.gold_reader import candle_filters


@dataclass(frozen=True)
class Published:
    path: Path
    seconds: float
    rows: dict[str, int]


def publish(warehouse: Path, snapshot: Path) -> Published:
    """Copy the dashboard's rows of gold from ``warehouse`` into a new file that replaces ``snapshot``.

    Raises duckdb.Error (e.g. the warehouse is held by another process) or OSError; the old snapshot
    stays in place then.
    """
    import duckdb

    started = time.perf_counter()
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    # The warehouse is attached under its own catalog name (DuckDB's: the file name up to its first dot),
    # which is how dbt-duckdb qualifies the tables a view such as gold_treechart reads; the staging
    # file's catalog name must differ from it.
    catalog = warehouse.name.lstrip(".").split(".")[0]
    staging = snapshot.with_name(f"{catalog}_gold_snapshot_staging_{os.getpid()}.tmp")
    staging.unlink(missing_ok=True)
    rows: dict[str, int] = {}
    try:
        with duckdb.connect(str(staging)) as conn:
            conn.execute(f"attach '{_quoted(warehouse)}' as \"{catalog}\" (read_only)")
            existing = {
                name
                for (name,) in conn.execute(
                    "select table_name from duckdb_tables() where database_name = ? and schema_name = 'gold' "
                    "union all select view_name from duckdb_views() where database_name = ? "
                    "and schema_name = 'gold'",
                    [catalog, catalog],
                ).fetchall()
            }
            conn.execute("create schema gold")
            for name in ("gold_kpi", "gold_treechart", "gold_candlestick"):
                if name not in existing:
                    continue  # not built yet (e.g. the views before their first build): the page says so
                source = f'"{catalog}".gold.{name}'
                where = ""
                if name == "gold_candlestick":
                    filters = candle_filters(source)
                    where = f" where ({filters['minute']}) or ({filters['day']})"
                conn.execute(f"create table gold.{name} as select * from {source}{where}")
                (rows[name],) = conn.execute(f"select count(*) from gold.{name}").fetchone()  # type: ignore[misc]
            conn.execute(f'detach "{catalog}"')
            conn.execute("checkpoint")
        os.replace(staging, snapshot)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        with contextlib.suppress(FileNotFoundError):
            staging.with_name(staging.name + ".wal").unlink()
    return Published(snapshot, time.perf_counter() - started, rows)


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


def publish_after_build(log: Any) -> Published | None:
    """Publish the snapshot of the warehouse dbt just built in this run, if dbt's target is DuckDB.

    The paths come from this process's environment at run time, as dbt's do (profiles.yml reads
    DUCKDB_PATH when the build runs), so the snapshot is always of the file dbt wrote.
    """
    from stock_platform.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        log.warning(f"gold snapshot for the dashboard not published: {exc}")
        return None
    if settings.dbt_target != "duckdb":
        return None
    return try_publish(settings.duckdb_file, settings.gold_snapshot_file, log.info, log.warning)


def try_publish(
    warehouse: Path, snapshot: Path, info: Callable[[str], Any], warning: Callable[[str], Any]
) -> Published | None:
    """``publish``, saying what it did; a failure is reported and swallowed, because the dashboard must
    never fail a pipeline run (it keeps the previous snapshot, and the next gold build publishes again)."""
    if str(warehouse) == ":memory:" or not warehouse.exists():
        return None
    try:
        published = publish(warehouse, snapshot)
    except Exception as exc:  # noqa: BLE001
        warning(
            f"gold snapshot for the dashboard not updated ({type(exc).__name__}: {exc}); it keeps the "
            "previous one, and the next gold build publishes again"
        )
        return None
    info(
        f"gold snapshot for the dashboard published to {published.path} in {published.seconds:.3f} s "
        f"({', '.join(f'{name}: {count} rows' for name, count in published.rows.items())})"
    )
    return published
