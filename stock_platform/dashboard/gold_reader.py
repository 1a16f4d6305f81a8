"""The dashboard's data access: what it reads from the gold tables, with one set of queries for both
warehouses.

The queries are plain SQL that DuckDB and Snowflake read alike (unquoted names, ``interval`` arithmetic);
only the connection and the tables' qualifier differ. On DuckDB they run on the gold snapshot
(``snapshot.py``), never on the warehouse file a run writes; on Snowflake on the GOLD schema as the
read-only BI role. Rows come back as pandas frames with lower-case column names and naive UTC timestamps.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stock_platform.settings import Settings

if TYPE_CHECKING:
    # Imported where frames are built: the code location imports this module (through the gold snapshot
    # a run publishes), and pandas would add ~90 MiB and ~1.4 s to every code server and run process.
    import pandas as pd

GOLD_TABLES = ("gold_kpi", "gold_candlestick", "gold_treechart")
# Daily candles shown, and kept in the DuckDB snapshot: the last weeks.
DAILY_CANDLE_DAYS = 30

KPI_COLUMNS = ("symbol", "price", "change", "change_pct", "day_high", "day_low", "as_of", "fetched_at")
CANDLE_COLUMNS = ("bucket_start", "open", "high", "low", "close", "sample_count")
TREEMAP_COLUMNS = (
    "symbol", "avg_price", "last_price", "volatility", "relative_volatility", "candle_count",
    "return_count", "window_start", "window_end",
)  # fmt: skip


class GoldUnavailable(RuntimeError):
    """The gold tables cannot be read now; the message says why and what to do."""


class GoldEmpty(GoldUnavailable):
    """The warehouse answers but holds no gold data yet."""


def candle_filters(candles: str) -> dict[str, str]:
    """The rows of ``candles`` the dashboard shows, by grain: the 1-minute candles of the current day (the
    UTC day of the newest 1-minute candle of any symbol) and the daily candles of the last
    DAILY_CANDLE_DAYS days up to the newest one. The snapshot keeps exactly these rows."""
    return {
        "minute": (
            "grain = 'minute' and bucket_start >= "
            f"(select date_trunc('day', max(bucket_start)) from {candles} where grain = 'minute')"
        ),
        "day": (
            f"grain = 'day' and bucket_start >= (select max(bucket_start) - interval '{DAILY_CANDLE_DAYS - 1} days' "
            f"from {candles} where grain = 'day')"
        ),
    }


@dataclass(frozen=True)
class GoldStatus:
    """What changes when gold changes, and when the dashboard's copy of it was written (if known)."""

    version: tuple[Any, ...]
    published_at: dt.datetime | None


class GoldReader:
    """The dashboard's reads of gold through ``connect`` (a context manager yielding a DB-API connection
    that takes ``?`` or ``%s`` parameters, as ``paramstyle`` says) on tables qualified by ``qualifier``."""

    def __init__(
        self,
        connect: Callable[[], contextlib.AbstractContextManager[Any]],
        qualifier: str,
        paramstyle: str = "qmark",
        where: str = "",
    ) -> None:
        self._connect = connect
        self._qualifier = qualifier
        self._param = "?" if paramstyle == "qmark" else "%s"
        self.where = where  # shown in messages: which file or account is read

    def table(self, name: str) -> str:
        return f"{self._qualifier}.{name}"

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        sql = sql.replace("?", self._param)
        try:
            with self._connect() as conn:
                cursor = conn.cursor()
                try:
                    cursor.execute(sql, tuple(params))
                    return [tuple(row) for row in cursor.fetchall()]
                finally:
                    cursor.close()
        except GoldUnavailable:
            raise
        except Exception as exc:  # each driver has its own errors; the message is what the page shows
            raise self._explain(exc) from exc

    def _explain(self, exc: Exception) -> GoldUnavailable:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        lowered = text.lower()
        if "does not exist" in lowered or "not found" in lowered or "not authorized" in lowered:
            return GoldEmpty(
                f"the gold tables are not in {self.where} yet ({text}); they appear once the pipeline "
                "has built its first minute"
            )
        return GoldUnavailable(f"cannot read gold from {self.where}: {text}")

    def _frame(self, sql: str, columns: Sequence[str], params: Sequence[Any] = ()) -> pd.DataFrame:
        import pandas as pd

        frame = pd.DataFrame(self._rows(sql, params), columns=list(columns))
        # Snowflake's connector returns NUMBER columns as Decimal; the frames hold plain numbers.
        for column in frame.columns:
            if frame[column].dtype == object and len(frame) and _is_decimal(frame[column].iloc[0]):
                frame[column] = frame[column].astype(float)
        return frame

    def status(self) -> GoldStatus:
        """A cheap look at whether gold changed: the newest quote, and the rows of each gold table."""
        kpi, candles = self.table("gold_kpi"), self.table("gold_candlestick")
        (row,) = self._rows(
            f"select (select max(fetched_at) from {kpi}), (select count(*) from {kpi}), "
            f"(select max(last_quote_ts) from {candles}), (select count(*) from {candles})"
        )
        return GoldStatus(version=tuple(row), published_at=None)

    def kpis(self) -> pd.DataFrame:
        """gold_kpi, one row per symbol, by symbol."""
        frame = self._frame(
            f"select {', '.join(KPI_COLUMNS)} from {self.table('gold_kpi')} order by symbol", KPI_COLUMNS
        )
        if frame.empty:
            raise GoldEmpty(f"gold_kpi in {self.where} has no rows yet: no minute has reached gold")
        return frame

    def candles(self, symbol: str, grain: str) -> pd.DataFrame:
        """One symbol's candles of a grain ('minute': the current day; 'day': the last weeks), by time."""
        candles = self.table("gold_candlestick")
        return self._frame(
            f"select {', '.join(CANDLE_COLUMNS)} from {candles} "
            f"where symbol = ? and {candle_filters(candles)[grain]} order by bucket_start",
            CANDLE_COLUMNS,
            (symbol,),
        )

    def treemap(self) -> pd.DataFrame:
        """gold_treechart, one row per symbol with a candle in the volatility window, by symbol."""
        return self._frame(
            f"select {', '.join(TREEMAP_COLUMNS)} from {self.table('gold_treechart')} order by symbol",
            TREEMAP_COLUMNS,
        )


def _is_decimal(value: Any) -> bool:
    return type(value).__name__ == "Decimal"


# ------------------------------------------------------------------------------------------------ DuckDB


class SnapshotReader(GoldReader):
    """The DuckDB snapshot of gold, read-only. One connection per published file, opened when a new file
    is seen (opening costs tens of milliseconds); each query runs on its own cursor, so page sessions in
    Streamlit's threads read at once. Holding a replaced file open delays nothing: publication renames a
    new file into place and never opens the old one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: Any = None
        self._identity: tuple[int, int] | None = None
        super().__init__(self._open, "gold", "qmark", where=str(path))

    def _missing(self) -> GoldEmpty:
        return GoldEmpty(
            f"no gold snapshot at {self.path} yet: it is written after each minute's gold build. Is "
            "the pipeline running (`stock-platform run`, or the lag sensor in the Dagster UI)?"
        )

    @contextlib.contextmanager
    def _open(self) -> Iterator[Any]:
        import duckdb

        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise self._missing() from None
        identity = (stat.st_ino, stat.st_mtime_ns)
        with self._lock:
            if identity != self._identity:
                if self._conn is not None:
                    self._conn.close()
                    self._conn, self._identity = None, None
                try:
                    self._conn = duckdb.connect(str(self.path), read_only=True)
                except duckdb.Error as exc:
                    raise GoldUnavailable(f"cannot open the gold snapshot {self.path}: {exc}") from exc
                self._identity = identity
            conn = self._conn
        yield conn

    def status(self) -> GoldStatus:
        """The file's identity: each publication replaces it (a new inode), so no query is needed."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise self._missing() from None
        published = dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC).replace(tzinfo=None)
        return GoldStatus(version=(stat.st_ino, stat.st_mtime_ns, stat.st_size), published_at=published)


# --------------------------------------------------------------------------------------------- Snowflake


def snowflake_connection_args(settings: Settings) -> dict[str, Any]:
    """The BI role's sign-in from the settings: the dashboard's service user and its key pair."""
    from stock_platform.settings import SettingsError

    if not settings.snowflake_account:
        raise SettingsError("SNOWFLAKE_ACCOUNT must be set for the dashboard on WAREHOUSE=snowflake")
    settings.require(
        "dashboard_snowflake_user",
        "dashboard_snowflake_private_key_path",
        because="for the dashboard on WAREHOUSE=snowflake (its read-only user: sql/snowflake/bi_reader.sql)",
    )
    args: dict[str, Any] = {
        "account": settings.snowflake_account,
        "user": settings.dashboard_snowflake_user,
        "private_key_file": settings.dashboard_snowflake_private_key_path,
        "role": settings.dashboard_snowflake_role,
        "warehouse": settings.dashboard_snowflake_warehouse,
        "database": settings.snowflake_database,
        "schema": "GOLD",
        "application": "stock_platform_dashboard",
        "login_timeout": 20,
        "network_timeout": 30,
    }
    if settings.dashboard_snowflake_private_key_passphrase is not None:
        args["private_key_file_pwd"] = settings.dashboard_snowflake_private_key_passphrase.get_secret_value()
    return args


class SnowflakeReader(GoldReader):
    """The GOLD schema in Snowflake, one connection kept open and re-opened after an error."""

    def __init__(self, connection_args: dict[str, Any], database: str) -> None:
        self._args = connection_args
        self._conn: Any = None
        account = connection_args.get("host") or connection_args.get("account")
        super().__init__(
            self._open, f"{database}.GOLD", "pyformat", where=f"Snowflake {account} {database}.GOLD"
        )

    @contextlib.contextmanager
    def _open(self) -> Iterator[Any]:
        import snowflake.connector

        if self._conn is None:
            self._conn = snowflake.connector.connect(**self._args)
        try:
            yield self._conn
        except Exception:
            # A dropped session or a network error: start afresh on the next read.
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
            raise


def reader_for(settings: Settings) -> GoldReader:
    """The reader of the configured warehouse."""
    if settings.warehouse == "snowflake":
        return SnowflakeReader(snowflake_connection_args(settings), settings.snowflake_database)
    return SnapshotReader(settings.gold_snapshot_file)
