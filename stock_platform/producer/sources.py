"""Where quotes come from: Finnhub's /quote, a seeded simulated feed, or a recorded JSONL file.

Every source yields batches (lists) of items. An item is either a candidate quote, the tuple
``(symbol, c, d, dp, h, l, o, pc, t, fetched_at)`` in the record's field order, or a ``Rejection``
that belongs in the dead-letter topic. The publisher turns candidates into records; a source only
decides what it fetched and when.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stock_platform.producer.limiter import TokenBucket
from stock_platform.producer.market_hours import seconds_until_session
from stock_platform.quotes import FINNHUB_FIELDS, SYMBOL_PATTERN, InvalidQuote, validate_finnhub_quote

log = logging.getLogger(__name__)

DEFAULT_SYMBOLS = ("AAPL", "AMZN", "GOOGL", "MSFT", "TSLA")
MAX_SIMULATED_SYMBOLS = 10_000
# A DLQ message carries the offending payload for diagnosis, not an unbounded copy of it.
MAX_PAYLOAD_CHARS = 2000

Candidate = tuple[Any, ...]  # (symbol, c, d, dp, h, l, o, pc, t, fetched_at)


@dataclass(frozen=True, slots=True)
class Rejection:
    """An input that must not reach the main topic; ``reason`` says why."""

    reason: str
    symbol: str | None
    payload: str


Item = Candidate | Rejection


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class QuoteSource(Protocol):
    """What the producer loop needs from a source."""

    name: str
    # True when every candidate is valid by construction (and property-tested), so the publisher may
    # validate a sample instead of every record; false for anything that came over the wire or disk.
    trusted: bool
    stats: dict[str, float]

    def batches(self, stop: threading.Event) -> Generator[list[Item], None, None]: ...


def candidate_from_quote(symbol: str, quote: Any, fetched_at: int) -> Candidate:
    """Check a Finnhub-shaped mapping and return it as a candidate; raise InvalidQuote otherwise."""
    if not isinstance(quote, Mapping):
        raise InvalidQuote(f"quote must be a JSON object, got {type(quote).__name__}")
    validate_finnhub_quote(quote)
    return (symbol, *(quote[f] for f in FINNHUB_FIELDS), fetched_at)


def _payload_text(payload: Any) -> str:
    text = payload if isinstance(payload, str) else json.dumps(payload, default=repr)
    return text[:MAX_PAYLOAD_CHARS]


# --------------------------------------------------------------------------------------------- simulated


def simulated_symbols(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct ticker-like names: the default five first, then seeded 2-4 letter tickers."""
    if not 1 <= count <= MAX_SIMULATED_SYMBOLS:
        raise ValueError(f"symbol count must be between 1 and {MAX_SIMULATED_SYMBOLS}, got {count}")
    symbols = list(DEFAULT_SYMBOLS[:count])
    seen = set(symbols)
    rng = random.Random(f"symbols:{seed}")
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    while len(symbols) < count:
        name = "".join(rng.choices(letters, k=rng.choice((2, 3, 3, 4, 4, 4))))
        if name not in seen:
            seen.add(name)
            symbols.append(name)
    return symbols


# 4096 multiplicative steps in basis points, roughly normal with a 0.05% standard deviation per tick;
# mirrored so the walk has no drift.
def _step_table(rng: random.Random) -> list[int]:
    half = [round(rng.gauss(0.0, 5.0)) for _ in range(2048)]
    return half + [-step for step in half]


class SimulatedSource:
    """A seeded random walk per symbol, one quote per symbol per round, at ``rate`` quotes/s in total.

    Prices are kept in integer cents so every field is exact and agrees with the others:
    ``d = c - pc``, ``dp = 100 * d / pc`` (to 4 decimals), ``h >= max(o, c)``, ``l <= min(o, c)``.
    The sequence of prices depends only on ``seed`` and the symbols; the clock gives ``t`` and
    ``fetched_at``. ``rate`` of None or 0 means as fast as the consumer takes them.
    """

    name = "simulated"
    trusted = True

    def __init__(
        self,
        symbols: Sequence[str],
        seed: int = 0,
        rate: float | None = None,
        clock_ms: Callable[[], int] = now_ms,
        batch_size: int | None = None,
    ) -> None:
        if not symbols:
            raise ValueError("the simulated source needs at least one symbol")
        if len(symbols) > MAX_SIMULATED_SYMBOLS:
            raise ValueError(f"at most {MAX_SIMULATED_SYMBOLS} simulated symbols, got {len(symbols)}")
        self.symbols = list(symbols)
        self.rate = rate or None
        self._clock_ms = clock_ms
        if batch_size is None:
            # About 20 batches a second when paced, so pacing stays smooth; large batches when not.
            batch_size = 1000 if self.rate is None else max(1, min(1000, int(self.rate / 20)))
        self.batch_size = batch_size
        self.stats: dict[str, float] = {}
        rng = random.Random(f"prices:{seed}")
        self._rng = rng
        self._steps = _step_table(rng)
        n = len(self.symbols)
        self._pc = [round(math.exp(rng.uniform(math.log(5), math.log(900))) * 100) for _ in range(n)]
        self._o = [max(1, pc + pc * round(rng.gauss(0.0, 80.0)) // 10_000) for pc in self._pc]
        self._c = list(self._o)
        self._h = list(self._o)
        self._l = list(self._o)
        self._next = 0

    def take(self, count: int, fetched_at: int) -> list[Candidate]:
        """The next ``count`` quotes, continuing round-robin over the symbols."""
        symbols, pc_, c_, h_, l_, o_ = self.symbols, self._pc, self._c, self._h, self._l, self._o
        steps, bits = self._steps, self._rng.getrandbits
        n = len(symbols)
        i = self._next
        t = fetched_at // 1000
        out: list[Candidate] = []
        append = out.append
        for _ in range(count):
            c = c_[i]
            # Rounded, not floored: flooring would lose a cent on every down-tick and drift prices down.
            c = c + (c * steps[bits(12)] + 5_000) // 10_000
            if c < 1:
                c = 1
            c_[i] = c
            if c > h_[i]:
                h_[i] = c
            elif c < l_[i]:
                l_[i] = c
            pc = pc_[i]
            d = c - pc
            # Integer division floors toward minus infinity; round half away from zero instead.
            dp_e4 = (abs(d) * 1_000_000 + pc // 2) // pc
            append((symbols[i], c / 100, d / 100, (dp_e4 if d >= 0 else -dp_e4) / 10_000,
                    h_[i] / 100, l_[i] / 100, o_[i] / 100, pc / 100, t, fetched_at))  # fmt: skip
            i += 1
            if i == n:
                i = 0
        self._next = i
        return out

    def batches(self, stop: threading.Event) -> Generator[list[Item], None, None]:
        size = self.batch_size
        start = time.monotonic()
        emitted = 0
        while not stop.is_set():
            if self.rate is not None:
                # Pace against the start, not the previous batch, so sleep jitter does not accumulate.
                ahead = start + emitted / self.rate - time.monotonic()
                if ahead > 0 and stop.wait(ahead):
                    return
            batch = self.take(size, self._clock_ms())
            emitted += size
            yield batch  # type: ignore[misc]


# --------------------------------------------------------------------------------------------- replay


class ReplaySource:
    """Quotes recorded one JSON object per line (a record, or a Finnhub quote plus ``symbol``).

    ``pace="original"`` keeps the recorded spacing (from ``fetched_at`` ms, else ``t`` s);
    ``pace="fast"`` sends them as fast as possible. Each replayed quote is stamped with the time it is
    sent, like a fetch, so it lands in the current minute; its ``t`` stays as recorded.
    """

    name = "replay"
    trusted = False

    def __init__(
        self,
        path: Path,
        pace: str = "fast",
        clock_ms: Callable[[], int] = now_ms,
        batch_size: int = 1000,
    ) -> None:
        if pace not in ("original", "fast"):
            raise ValueError(f"pace must be 'original' or 'fast', got {pace!r}")
        self.path = Path(path)
        self.pace = pace
        self._clock_ms = clock_ms
        self.batch_size = batch_size
        self.stats: dict[str, float] = {"lines": 0}

    def _item(self, line: str, fetched_at: int) -> tuple[Item, float | None]:
        """The item for one line and its recorded time in seconds (None when it has none)."""
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            return Rejection(f"not JSON: {exc.msg} at char {exc.pos}", None, line[:MAX_PAYLOAD_CHARS]), None
        if not isinstance(obj, dict):
            return Rejection(
                f"line must be a JSON object, got {type(obj).__name__}", None, _payload_text(obj)
            ), None
        symbol = obj.get("symbol")
        recorded = _recorded_seconds(obj)
        if not isinstance(symbol, str) or not SYMBOL_PATTERN.match(symbol):
            reason = f"symbol {symbol!r} is not a ticker"
            return Rejection(
                reason, symbol if isinstance(symbol, str) else None, _payload_text(obj)
            ), recorded
        try:
            return candidate_from_quote(symbol, obj, fetched_at), recorded
        except InvalidQuote as exc:
            return Rejection(str(exc), symbol, _payload_text(obj)), recorded

    def batches(self, stop: threading.Event) -> Generator[list[Item], None, None]:
        first_recorded: float | None = None
        start = time.monotonic()
        batch: list[Item] = []
        with self.path.open(encoding="utf-8", errors="replace") as lines:
            for raw in lines:
                line = raw.strip()
                if not line:
                    continue
                if stop.is_set():
                    return
                self.stats["lines"] += 1
                if self.pace == "fast":
                    item, _ = self._item(line, self._clock_ms())
                    batch.append(item)
                    if len(batch) >= self.batch_size:
                        yield batch
                        batch = []
                    continue
                item, recorded = self._item(line, 0)
                if recorded is not None:
                    if first_recorded is None:
                        first_recorded = recorded
                    ahead = start + (recorded - first_recorded) - time.monotonic()
                    if ahead > 0 and stop.wait(ahead):
                        return
                if not isinstance(item, Rejection):
                    item = (*item[:-1], self._clock_ms())
                yield [item]
        if batch:
            yield batch


def _recorded_seconds(obj: Mapping[str, Any]) -> float | None:
    for key, scale in (("fetched_at", 1000.0), ("t", 1.0)):
        value = obj.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return value / scale
    return None


# --------------------------------------------------------------------------------------------- finnhub


class FinnhubAuthError(RuntimeError):
    """Finnhub refused the API key; retrying cannot help."""


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def backoff_seconds(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0.0, min(cap, base * 2.0 ** min(attempt, 30)))


@dataclass
class FinnhubSource:
    """Polls Finnhub's /quote for each symbol in turn, within the token bucket's budget.

    429 waits (``Retry-After`` when given, else backoff) and retries without limit; 5xx and network
    errors retry with backoff up to ``max_attempts`` and then move on to the next symbol; 401/403 raise
    FinnhubAuthError. A non-JSON body, a missing field or an all-zero quote becomes a Rejection.
    """

    api_key: str = field(repr=False)
    symbols: Sequence[str]
    limiter: TokenBucket
    base_url: str | None = None
    max_attempts: int = 5
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    timeout: float = 10.0
    rng: random.Random = field(default_factory=random.Random)
    clock_ms: Callable[[], int] = now_ms
    # Outside NYSE's regular session, wait this long between rounds (0: poll at the same pace always).
    off_hours_interval: float = 0.0
    stats: dict[str, float] = field(default_factory=lambda: {
        "calls": 0, "rate_limited": 0, "rate_limit_wait_s": 0.0, "limiter_wait_s": 0.0,
        "retries": 0, "gave_up": 0,
    })  # fmt: skip

    name = "finnhub"
    trusted = False

    def __post_init__(self) -> None:
        import finnhub

        if not self.api_key:
            raise FinnhubAuthError("FINNHUB_API_KEY is empty; set it to your Finnhub API key")
        self.client = finnhub.Client(api_key=self.api_key)
        self.client.DEFAULT_TIMEOUT = self.timeout
        if self.base_url:
            # The client builds "{API_URL}/{path}"; an instance attribute leaves other clients alone.
            self.client.API_URL = self.base_url.rstrip("/")

    def scrub(self, text: str) -> str:
        """``text`` without the API key (requests puts the full URL, token included, in its errors)."""
        return text.replace(self.api_key, "***") if self.api_key else text

    def batches(self, stop: threading.Event) -> Generator[list[Item], None, None]:
        try:
            while not stop.is_set():
                if self.off_hours_interval > 0:
                    closed_for = seconds_until_session(dt.datetime.now(dt.UTC))
                    if closed_for > 0:
                        log.info(
                            "market closed; next round in %.0f s", min(closed_for, self.off_hours_interval)
                        )
                        if stop.wait(min(closed_for, self.off_hours_interval)):
                            return
                for symbol in self.symbols:
                    item = self.fetch(symbol, stop)
                    if stop.is_set() and item is None:
                        return
                    if item is not None:
                        yield [item]
        finally:
            self.client.close()

    def fetch(self, symbol: str, stop: threading.Event) -> Item | None:
        """One quote for ``symbol``; None when stopped or after giving up on errors."""
        import finnhub
        import requests

        attempt = 0
        while True:
            waited = self.limiter.acquire(wait=stop.wait)
            if waited is None:
                return None
            self.stats["limiter_wait_s"] += waited
            self.stats["calls"] += 1
            try:
                payload = self.client.quote(symbol)
            except finnhub.FinnhubAPIException as exc:
                status = exc.status_code
                if status in (401, 403):
                    raise FinnhubAuthError(
                        f"Finnhub refused the API key (HTTP {status}); set FINNHUB_API_KEY to a valid key"
                    ) from None
                if status == 429:
                    self.stats["rate_limited"] += 1
                    delay = retry_after_seconds(exc.response.headers.get("Retry-After"))
                    if delay is None:
                        delay = backoff_seconds(attempt, self.backoff_base, self.backoff_cap, self.rng)
                    delay = min(delay, self.backoff_cap)
                    log.warning("finnhub rate limited (429) on %s; waiting %.2f s", symbol, delay)
                    self.stats["rate_limit_wait_s"] += delay
                    attempt += 1
                    if stop.wait(delay):
                        return None
                    continue
                if status < 500 and status != 408:
                    body = exc.response.text[:MAX_PAYLOAD_CHARS]
                    return Rejection(f"HTTP {status}: {self.scrub(exc.message)}", symbol, self.scrub(body))
                error = f"HTTP {status}"
            except finnhub.FinnhubRequestException as exc:
                # The client raises this for a body it cannot parse; its message carries the body.
                body = exc.message.removeprefix("Invalid Response: ")
                return Rejection("not JSON: Finnhub answered a body that is not a JSON object", symbol,
                                 self.scrub(body[:MAX_PAYLOAD_CHARS]))  # fmt: skip
            except requests.RequestException as exc:
                error = self.scrub(f"{type(exc).__name__}: {exc}")
            else:
                fetched_at = self.clock_ms()
                try:
                    return candidate_from_quote(symbol, payload, fetched_at)
                except InvalidQuote as exc:
                    return Rejection(str(exc), symbol, _payload_text(payload))
            attempt += 1
            if attempt >= self.max_attempts:
                self.stats["gave_up"] += 1
                log.error("finnhub %s failed %d times (%s); skipping it this round", symbol, attempt, error)
                return None
            self.stats["retries"] += 1
            delay = backoff_seconds(attempt, self.backoff_base, self.backoff_cap, self.rng)
            log.warning("finnhub %s failed (%s); retry %d in %.2f s", symbol, error, attempt, delay)
            if stop.wait(delay):
                return None
