"""The raw table in Snowflake: ``BRONZE_STOCK_QUOTES_RAW(V VARIANT)``, loaded through an internal stage.

Its own module so that importing the platform does not import the Snowflake client libraries (several
seconds) unless WAREHOUSE=snowflake.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from dagster_snowflake import SnowflakeResource

from stock_platform.ingestion.object_keys import minute_iso, stage_path
from stock_platform.resources.warehouse import MinuteFile, Warehouse, sql_identifier


class SnowflakeWarehouse(Warehouse):
    """The raw table ``BRONZE_STOCK_QUOTES_RAW(V VARIANT)`` in Snowflake, loaded through an internal stage.

    Each minute's object is PUT to a stage folder unique to the minute, then, in one transaction, the
    minute's rows are deleted (by ``V:minute``) and the staged files copied in with ``FORCE = TRUE``:
    COPY's load history would otherwise skip a file it already loaded, and the delete is what makes the
    forced copy not duplicate. Several minutes share one transaction and one COPY, so a cadence of every N
    minutes costs one warehouse resume for N minutes.
    """

    snowflake: SnowflakeResource
    table: str = "BRONZE_STOCK_QUOTES_RAW"
    stage: str = "STOCK_QUOTES_STAGE"

    def _qualified(self, name: str) -> str:
        # Qualify with the resource's database and schema so statements never depend on a session's
        # current schema (fakesnow's server, for one, does not take it from the login).
        if "." not in name and self.snowflake.database and self.snowflake.schema_:
            name = f"{self.snowflake.database}.{self.snowflake.schema_}.{name}"
        return sql_identifier(name)

    def load_minutes(self, topic: str, files: Sequence[MinuteFile]) -> dict[str, int]:
        table, stage = self._qualified(self.table), self._qualified(self.stage)
        if not files:
            return {}
        staged = []
        with tempfile.TemporaryDirectory() as folder, self.snowflake.get_connection() as conn:
            cursor = conn.cursor()
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
            cursor.execute("BEGIN")
            try:
                cursor.execute(
                    f"DELETE FROM {table} WHERE V:minute::STRING IN ({', '.join(['%s'] * len(minutes))})",
                    minutes,
                )
                # One COPY per minute folder, all in the one transaction (and one warehouse resume).
                # A single COPY with FILES = (...) would do as well on Snowflake; fakesnow only resolves
                # internal-stage folders, so the folder form is what both accept.
                for folder_path in staged:
                    cursor.execute(
                        f"COPY INTO {table} FROM @{stage}/{folder_path}/ "
                        "FILE_FORMAT = (TYPE = JSON COMPRESSION = GZIP) FORCE = TRUE ON_ERROR = ABORT_STATEMENT"
                    )
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute(
                f"SELECT V:minute::STRING, COUNT(*) FROM {table} "
                f"WHERE V:minute::STRING IN ({', '.join(['%s'] * len(minutes))}) GROUP BY 1",
                minutes,
            )
            counts = {minute: int(n) for minute, n in cursor.fetchall()}
        return {f.partition_key: counts.get(minute_iso(f.partition_key), 0) for f in files}

    def minute_row_count(self, partition_key: str) -> int:
        with self.snowflake.get_connection() as conn:
            cursor = conn.cursor()
            cursor.execute(
                f"SELECT COUNT(*) FROM {self._qualified(self.table)} WHERE V:minute::STRING = %s",
                [minute_iso(partition_key)],
            )
            row = cursor.fetchone()
        return int(row[0]) if row else 0
