"""The raw input of the dbt integration tests: a few minutes of quotes with every case silver must handle.

Minutes 0-3 are loaded first; then minute 4 arrives together with late records loaded into minutes 0, 2
and 3. Every loaded minute is followed by a run over it, so the incremental run after the late load covers
minutes 0-4 (one range run, as a catch-up makes) and takes every late record, however old its minute.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from stock_platform.services.raw_quotes import Quote, envelope

SYMBOLS = ("AAA", "BBB", "CCC")


@dataclass
class Scenario:
    base: dt.datetime  # minute 0, aware UTC
    first_envelopes: list[dict[str, Any]] = field(default_factory=list)
    late_envelopes: list[dict[str, Any]] = field(default_factory=list)
    first_quotes: list[Quote] = field(default_factory=list)  # valid quotes in the first load
    late_quotes: list[Quote] = field(default_factory=list)  # valid quotes in the late load
    late_minutes: tuple[int, int] = (0, 5)  # the minutes [first, end) the late load touched
    invalid_count: int = 0
    _offset: int = 0

    def minute(self, n: int) -> dt.datetime:
        return self.base + dt.timedelta(minutes=n)

    def _wrap(self, record: dict[str, Any]) -> dict[str, Any]:
        self._offset += 1
        return envelope(record, kafka_partition=self._offset % 2, kafka_offset=self._offset)


def _price(symbol_index: int, minute: int, k: int) -> float:
    # Deterministic, irregular walk around 100, 200, 300 so log returns differ per symbol.
    return round(100.0 * (symbol_index + 1) + ((minute * 37 + k * 11 + symbol_index * 5) % 23) * 0.25, 2)


def build_scenario(base: dt.datetime) -> Scenario:
    s = Scenario(base=base)
    base_s = int(base.timestamp())
    seq = 0

    def quote(
        symbol_index: int, minute: int, second: int, price: float, lag_s: int = 0, run: str = "run-1"
    ) -> Quote:
        nonlocal seq
        seq += 1
        fetched_ms = (base_s + minute * 60 + second) * 1000 + 100 + symbol_index * 10
        return Quote(
            SYMBOLS[symbol_index], base_s + minute * 60 + second - lag_s, fetched_ms, price, seq, run
        )

    # Minutes 0-4: each symbol every 10 s; a quote fetched at second 0 has a quote time one second
    # earlier, so it belongs to the previous minute's candle (candles follow quote time).
    minute_quotes: dict[int, list[Quote]] = {m: [] for m in range(5)}
    for m in range(5):
        for k in range(6):
            for i in range(len(SYMBOLS)):
                minute_quotes[m].append(quote(i, m, k * 10, _price(i, m, k), lag_s=1 if k == 0 else 0))

    first = [q for m in range(4) for q in minute_quotes[m]]
    s.first_quotes = list(first)
    for q in first:
        s.first_envelopes.append(s._wrap(q.record()))

    # Kafka redelivery: the same record (same id) twice at two offsets.
    redelivered = minute_quotes[1][4]
    s.first_envelopes.append(s._wrap(redelivered.record()))
    # Market closed: Finnhub repeats an unchanged quote on every poll; same symbol and t, new record id,
    # fetched later (still in minute 3). Silver keeps the first.
    repeated = minute_quotes[3][-1]
    repeat = Quote(repeated.symbol, repeated.t, repeated.fetched_at_ms + 3000, repeated.price, 10_000)
    s.first_quotes.append(repeat)
    s.first_envelopes.append(s._wrap(repeat.record()))
    # Invalid rows: kept out of silver and counted in silver_rejected_quotes.
    bad_price = quote(0, 1, 33, -1.0).record()
    high_below_low = quote(1, 1, 34, 150.0).record() | {"h": 140.0, "l": 160.0}
    missing = quote(2, 1, 35, 250.0).record()
    del missing["c"]
    for record in (bad_price, high_below_low, missing):
        s.first_envelopes.append(s._wrap(record))
    s.invalid_count = 3

    # Then minute 4, and late records loaded into minutes 2, 3 and 0.
    for q in minute_quotes[4]:
        s.late_envelopes.append(s._wrap(q.record()))
    new_high = quote(1, 2, 35, 999.0)  # BBB, minute 2: a new high of its minute and day candles
    later_dup = Quote("AAA", minute_quotes[3][0].t, minute_quotes[3][0].fetched_at_ms + 20_000, 555.0, 20_000)
    new_low = quote(0, 0, 25, 1.0)  # AAA, minute 0, four minutes late: a new low of its minute and day
    for q in (new_high, later_dup, new_low):
        s.late_envelopes.append(s._wrap(q.record()))
    s.late_quotes = [*minute_quotes[4], new_high, later_dup, new_low]
    return s
