"""Gold figures computed in plain Python from input quotes: the independent oracle for the dbt models.

Written from the model YAML's definitions, not from their SQL, so a wrong formula in either disagrees.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from stock_platform.quotes import InvalidQuote, validate_record
from stock_platform.services.raw_quotes import Quote

ROUND = 9  # digits compared; both warehouses compute in double precision


def _ts(epoch_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).replace(tzinfo=None)


def silver(quotes: Iterable[Quote]) -> list[Quote]:
    """One quote per (symbol, t): the earliest fetched, then the smallest record id (silver's tie rules when
    every copy of a record has the same content; silver_rows() applies the whole order)."""
    by_key: dict[tuple[str, int], Quote] = {}
    for q in quotes:
        key = (q.symbol, q.t)
        if key not in by_key or (q.fetched_at_ms, q.record_id) < (
            by_key[key].fetched_at_ms,
            by_key[key].record_id,
        ):
            by_key[key] = q
    return sorted(by_key.values(), key=lambda q: (q.symbol, q.t))


@dataclass(frozen=True)
class LoadedRow:
    """A raw-table row: a message's record (anything JSON) and where it was loaded."""

    record: Any
    minute: dt.datetime  # the loaded minute, naive UTC
    topic: str
    kafka_partition: int
    kafka_offset: int

    @property
    def valid(self) -> bool:
        try:
            validate_record(self.record)
        except InvalidQuote:
            return False
        return True

    @property
    def precedence(self) -> tuple[Any, ...]:
        """silver_quotes.yml's tie rules: the least of the rows sharing (symbol, t) is kept."""
        r = self.record
        record_id = f"{r['producer_run_id']}:{r['seq']}"
        return (r["fetched_at"], record_id, self.minute, self.topic, self.kafka_partition, self.kafka_offset)

    def quote(self) -> Quote:
        r = self.record
        return Quote(r["symbol"], r["t"], r["fetched_at"], float(r["c"]), r["seq"], r["producer_run_id"],
                     float(r["h"]), float(r["l"]))  # fmt: skip


def silver_rows(rows: Iterable[LoadedRow]) -> dict[tuple[str, int], LoadedRow]:
    """(symbol, t) -> the raw row silver keeps: the least by precedence among the valid rows."""
    kept: dict[tuple[str, int], LoadedRow] = {}
    for row in rows:
        if not row.valid:
            continue
        key = (row.record["symbol"], row.record["t"])
        if key not in kept or row.precedence < kept[key].precedence:
            kept[key] = row
    return kept


def candles(quotes: list[Quote]) -> set[tuple[Any, ...]]:
    """(symbol, grain, bucket_start, open, high, low, close, sample_count) for minute and day grain."""
    buckets: dict[tuple[str, str, dt.datetime], list[Quote]] = defaultdict(list)
    for q in quotes:
        moment = _ts(q.t)
        buckets[(q.symbol, "minute", moment.replace(second=0))].append(q)
        buckets[(q.symbol, "day", moment.replace(hour=0, minute=0, second=0))].append(q)
    rows = set()
    for (symbol, grain, start), members in buckets.items():
        ordered = sorted(members, key=lambda q: q.t)
        prices = [q.price for q in ordered]
        rows.add(
            (
                symbol,
                grain,
                start,
                ordered[0].price,
                max(prices),
                min(prices),
                ordered[-1].price,
                len(ordered),
            )
        )
    return rows


def kpi(quotes: list[Quote]) -> set[tuple[Any, ...]]:
    """(symbol, price, as_of) of each symbol's latest quote."""
    latest: dict[str, Quote] = {}
    for q in quotes:
        if q.symbol not in latest or (q.t, q.fetched_at_ms) > (
            latest[q.symbol].t,
            latest[q.symbol].fetched_at_ms,
        ):
            latest[q.symbol] = q
    return {(s, q.price, _ts(q.t)) for s, q in latest.items()}


def treechart(quotes: list[Quote], window_minutes: int = 60) -> dict[str, dict[str, Any]]:
    """Per symbol: candle_count, return_count, avg_price, last_price, volatility, relative_volatility."""
    if not quotes:
        return {}
    window_end = _ts(max(q.t for q in quotes)).replace(second=0)
    window_start = window_end - dt.timedelta(minutes=window_minutes - 1)
    closes: dict[str, dict[dt.datetime, Quote]] = defaultdict(dict)
    for q in quotes:
        minute = _ts(q.t).replace(second=0)
        if minute >= window_start and (minute not in closes[q.symbol] or q.t > closes[q.symbol][minute].t):
            closes[q.symbol][minute] = q
    out: dict[str, dict[str, Any]] = {}
    for symbol, by_minute in closes.items():
        prices = [by_minute[m].price for m in sorted(by_minute)]
        returns = [math.log(b / a) for a, b in zip(prices, prices[1:], strict=False)]
        out[symbol] = {
            "candle_count": len(prices),
            "return_count": len(returns),
            "avg_price": sum(prices) / len(prices),
            "last_price": prices[-1],
            "volatility": statistics.stdev(returns) if len(returns) >= 2 else None,
        }
    vols = [row["volatility"] for row in out.values() if row["volatility"] is not None]
    mean_vol = sum(vols) / len(vols) if vols else None
    for row in out.values():
        vol = row["volatility"]
        row["relative_volatility"] = vol / mean_vol if vol is not None and mean_vol else None
        row["window_start"], row["window_end"] = window_start, window_end
    return out


def rounded(row: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(round(v, ROUND) if isinstance(v, float) else v for v in row)
