"""The raw table in Snowflake: ``BRONZE_STOCK_QUOTES_RAW(V VARIANT)``, loaded through an internal stage.

Its own module so that importing the platform does not import the Snowflake client libraries (several
seconds) unless WAREHOUSE=snowflake.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dagster_snowflake import SnowflakeResource
from pydantic import Field, PrivateAttr

from stock_platform.object_keys import minute_iso, stage_path
from stock_platform.partitions import minute_window
from stock_platform.resources.object_store import remove_stale_entries
from stock_platform.resources.warehouse import (
    MinuteFile,
    Warehouse,
    partition_key_of,
    sql_identifier,
    utc_naive,
)

# Where the load copies each minute's object under the fixed name PUT stages it by. A load killed
# mid-way leaves its folder behind; the next load removes such folders once they are this old (no load
# holds one for more than the minutes a PUT of its files takes).
PUT_DIR = Path(tempfile.gettempdir()) / "stock-platform-snowflake-put"


class SnowflakeWarehouse(Warehouse):
    """The raw table ``BRONZE_STOCK_QUOTES_RAW(V VARIANT)`` in Snowflake, loaded through an internal stage.

    Each minute's object is PUT to a stage folder unique to the minute, then, in one transaction, the
    minute's rows of the topic are deleted (by ``V:minute`` and ``V:topic``), the staged files copied in
    with ``FORCE = TRUE`` (COPY's load history would otherwise skip a file it already loaded, and the
    delete is what makes the forced copy not duplicate), and the minutes recorded in the ledger table
    ``BRONZE_RAW_LOADED_MINUTES``. Several minutes share one transaction and one COPY, so a cadence of
    every N minutes costs one warehouse resume for N minutes.
    """

    snowflake: SnowflakeResource
    table: str = "BRONZE_STOCK_QUOTES_RAW"
    stage: str = "STOCK_QUOTES_STAGE"
    ledger: str = Field(
        default="BRONZE_RAW_LOADED_MINUTES",
        description="Ledger of loaded minutes (sql/snowflake/setup.sql); created if missing.",
    )
    put_dir_max_age_seconds: float = Field(
        default=3600.0, description="Age past which a local PUT folder left by a killed load is removed."
    )

    _ledger_ready: bool = PrivateAttr(default=False)

    def _qualified(self, name: str) -> str:
        # Qualify with the resource's database and schema so statements never depend on a session's
        # current schema (fakesnow's server, for one, does not take it from the login).
        if "." not in name and self.snowflake.database and self.snowflake.schema_:
            name = f"{self.snowflake.database}.{self.snowflake.schema_}.{name}"
        return sql_identifier(name)

    def _ensure_ledger(self, cursor: Any) -> None:
        """Create the ledger if setup.sql has not (a probe first, so a loader role without CREATE TABLE
        works where it exists); a new ledger starts with the minutes already in the raw table."""
        if self._ledger_ready:
            return
        ledger, table = self._qualified(self.ledger), self._qualified(self.table)
        try:
            cursor.execute(f"SELECT COUNT(*) FROM {ledger} WHERE 1 = 0")
        except Exception:  # the connector's ProgrammingError: "does not exist or not authorized"
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {ledger} (TOPIC STRING NOT NULL, MINUTE TIMESTAMP_NTZ NOT NULL, "
                "OBJECT_KEY STRING, ROW_COUNT NUMBER NOT NULL, LOADED_AT TIMESTAMP_NTZ NOT NULL)"
            )
            cursor.execute(
                f"INSERT INTO {ledger} SELECT V:topic::STRING, "
                "TO_TIMESTAMP_NTZ(REPLACE(REPLACE(V:minute::STRING, 'T', ' '), 'Z', '')), "
                "ANY_VALUE(V:object_key::STRING), COUNT(*), CURRENT_TIMESTAMP()::TIMESTAMP_NTZ "
                f"FROM {table} WHERE V:topic::STRING IS NOT NULL GROUP BY 1, 2"
            )
        self._ledger_ready = True

    def load_minutes(self, topic: str, files: Sequence[MinuteFile]) -> dict[str, int]:
        table, stage, ledger = (self._qualified(n) for n in (self.table, self.stage, self.ledger))
        if not files:
            return {}
        staged = []
        PUT_DIR.mkdir(parents=True, exist_ok=True)
        remove_stale_entries(PUT_DIR, self.put_dir_max_age_seconds)
        loaded_at = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
        with tempfile.TemporaryDirectory(dir=PUT_DIR) as folder, self.snowflake.get_connection() as conn:
            cursor = conn.cursor()
            self._ensure_ledger(cursor)
            for f in files:
                folder_path = stage_path(topic, f.partition_key)
                # PUT names the staged file after the local one; a fixed name per minute keeps re-runs
                # overwriting the same staged file rather than adding a second one.
                local = Path(folder) / folder_path.replace("/", "_") / "minute.ndjson.gz"
                local.parent.mkdir(parents=True)
                shutil.copyfile(f.path, local)
                cursor.execute(
                    f"PUT 'file://{local.as_posix()}' @{stage}/{folder_path}/ "
                    "AUTO_COMPRESS = FALSE SOURCE_COMPRESSION = GZIP OVERWRITE = TRUE"
                )
                staged.append(folder_path)
            minutes = [minute_iso(f.partition_key) for f in files]
            in_minutes = f"IN ({', '.join(['%s'] * len(minutes))})"
            cursor.execute("BEGIN")
            try:
                # Keyed by (minute, topic): a second topic loaded into the same table keeps its rows.
                cursor.execute(
                    f"DELETE FROM {table} WHERE V:minute::STRING {in_minutes} AND V:topic::STRING = %s",
                    [*minutes, topic],
                )
                # One COPY per minute folder, all in the one transaction (and one warehouse resume).
                # A single COPY with FILES = (...) would do as well on Snowflake; fakesnow only resolves
                # internal-stage folders, so the folder form is what both accept.
                for folder_path in staged:
                    cursor.execute(
                        f"COPY INTO {table} FROM @{stage}/{folder_path}/ "
                        "FILE_FORMAT = (TYPE = JSON COMPRESSION = GZIP) FORCE = TRUE ON_ERROR = ABORT_STATEMENT"
                    )
                cursor.execute(
                    f"SELECT V:minute::STRING, COUNT(*) FROM {table} "
                    f"WHERE V:minute::STRING {in_minutes} AND V:topic::STRING = %s GROUP BY 1",
                    [*minutes, topic],
                )
                counts = {minute: int(n) for minute, n in cursor.fetchall()}
                rows = {f.partition_key: counts.get(minute_iso(f.partition_key), 0) for f in files}
                starts = [self._minute_text(f.partition_key) for f in files]
                cursor.execute(
                    f"DELETE FROM {ledger} WHERE TOPIC = %s AND MINUTE {in_minutes}", [topic, *starts]
                )
                values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(files))
                cursor.execute(
                    f"INSERT INTO {ledger} (TOPIC, MINUTE, OBJECT_KEY, ROW_COUNT, LOADED_AT) VALUES {values}",
                    [
                        v
                        for f, start in zip(files, starts, strict=True)
                        for v in (topic, start, f.object_key, rows[f.partition_key], loaded_at)
                    ],
                )
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        return rows

    @staticmethod
    def _minute_text(partition_key: str) -> str:
        """The minute as a TIMESTAMP_NTZ literal Snowflake casts implicitly (``2026-11-28 08:00:00``)."""
        return minute_window(partition_key)[0].strftime("%Y-%m-%d %H:%M:%S")

    def minute_row_count(self, partition_key: str, topic: str | None = None) -> int:
        sql = f"SELECT COUNT(*) FROM {self._qualified(self.table)} WHERE V:minute::STRING = %s"
        params = [minute_iso(partition_key)]
        if topic is not None:
            sql += " AND V:topic::STRING = %s"
            params.append(topic)
        with self.snowflake.get_connection() as conn:
            cursor = conn.cursor()
            cursor.execute(sql, params)
            row = cursor.fetchone()
        return int(row[0]) if row else 0

    def loaded_minutes(
        self, topic: str, start: dt.datetime | None = None, end: dt.datetime | None = None
    ) -> dict[str, int]:
        sql = f"SELECT MINUTE, ROW_COUNT FROM {self._qualified(self.ledger)} WHERE TOPIC = %s"
        params = [topic]
        if start is not None:
            sql += " AND MINUTE >= %s"
            params.append(utc_naive(start).strftime("%Y-%m-%d %H:%M:%S"))
        if end is not None:
            sql += " AND MINUTE < %s"
            params.append(utc_naive(end).strftime("%Y-%m-%d %H:%M:%S"))
        with self.snowflake.get_connection() as conn:
            cursor = conn.cursor()
            self._ensure_ledger(cursor)
            cursor.execute(sql, params)
            return {partition_key_of(minute): int(n) for minute, n in cursor.fetchall()}
