"""A warehouse with gold built the way the pipeline builds it, for the dashboard's tests and benchmark.

Quotes come from the simulated source (believable prices, exact derived fields), are wrapped in the raw
table's envelope (docs/contracts.md) and inserted into DuckDB's raw table; gold is then built by
materializing the real dbt assets, which also publish the dashboard's snapshot.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from stock_platform.producer.publisher import build_record
from stock_platform.producer.sources import SimulatedSource, simulated_symbols
from stock_platform.services.raw_quotes import envelope, insert_duckdb
from stock_platform.transform.window import environment


class Feed:
    """Quotes of ``symbols`` every ``every_s`` seconds from ``start`` (aware UTC), minute after minute;
    each call to ``next_minutes`` continues the same random walk."""

    def __init__(self, symbols: Sequence[str], start: dt.datetime, every_s: int = 10, seed: int = 7) -> None:
        self.symbols = list(symbols)
        self.source = SimulatedSource(self.symbols, seed=seed)
        self.every_s = every_s
        self.next_ms = int(start.timestamp() * 1000)
        self.seq = 0

    def next_minutes(self, count: int) -> list[dict[str, Any]]:
        envelopes = []
        end_ms = self.next_ms + count * 60_000
        while self.next_ms < end_ms:
            for candidate in self.source.take(len(self.symbols), self.next_ms):
                self.seq += 1
                record = build_record(candidate, "simulated", "seed-run", self.seq)
                envelopes.append(envelope(record, kafka_partition=self.seq % 3, kafka_offset=self.seq))
            self.next_ms += self.every_s * 1000
        return envelopes

    @property
    def last_minute_key(self) -> str:
        """The partition key of the last minute fed."""
        minute = dt.datetime.fromtimestamp((self.next_ms - 1) / 1000, dt.UTC)
        return minute.strftime("%Y-%m-%d-%H:%M")


def append_raw(warehouse: Path, envelopes: Sequence[dict[str, Any]]) -> None:
    with duckdb.connect(str(warehouse)) as conn:
        insert_duckdb(conn, envelopes)


def dbt_env(warehouse: Path) -> contextlib.AbstractContextManager[None]:
    """DBT_TARGET and DUCKDB_PATH for an in-process build, restored afterwards."""
    return environment({"DBT_TARGET": "duckdb", "DUCKDB_PATH": str(warehouse)})


def materialize_gold(warehouse: Path, partition_key: str, views: bool = False) -> None:
    """Build silver and gold for one minute (all of raw on a first build), as a minute's run does; with
    ``views`` also the views (gold_treechart). Each build publishes the dashboard's snapshot."""
    import dagster as dg

    from stock_platform.transform.definitions import dbt_model_assets

    with dbt_env(warehouse):
        result = dg.materialize([dbt_model_assets[0]], partition_key=partition_key)
        assert result.success
        if views:
            assert dg.materialize([dbt_model_assets[1]]).success


def seeded_warehouse(
    warehouse: Path, symbol_count: int, minutes: int, end: dt.datetime, every_s: int = 10
) -> Feed:
    """A warehouse with ``minutes`` minutes of quotes ending at ``end`` (aware UTC, whole minute) built
    into gold; the returned feed continues from ``end``."""
    feed = Feed(simulated_symbols(symbol_count), end - dt.timedelta(minutes=minutes), every_s)
    append_raw(warehouse, feed.next_minutes(minutes))
    materialize_gold(warehouse, feed.last_minute_key, views=True)
    return feed
