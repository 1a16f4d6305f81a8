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
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from stock_platform.masking import Masker
from stock_platform.producer.limiter import TokenBucket
from stock_platform.producer.market_hours import seconds_until_session
from stock_platform.producer.reference_prices import REFERENCE_PRICES
from stock_platform.quotes import (
    FINNHUB_FIELDS,
    MAX_EPOCH_S,
    MIN_EPOCH_S,
    SCHEMA_VERSION,
    SOURCES,
    SYMBOL_PATTERN,
    InvalidQuote,
    short_repr,
    validate_finnhub_quote,
    validate_record,
)

log = logging.getLogger(__name__)

DEFAULT_SYMBOLS = ("AAPL", "AMZN", "GOOGL", "MSFT", "TSLA")
MAX_SIMULATED_SYMBOLS = 10_000
# A well-known ticker's simulated previous close is its reference price within this many basis points.
REFERENCE_JITTER_BP = 300
# Any other simulated symbol's previous close is log-uniform in this range of dollars.
UNKNOWN_PRICE_RANGE = (5, 900)
# A DLQ message carries the offending payload for diagnosis, not an unbounded copy of it.
MAX_PAYLOAD_CHARS = 2000
# A reason is one short line (a log line and a DLQ field), and a rejected symbol a short Kafka key,
# whatever the input was.
MAX_REASON_CHARS = 300
MAX_SYMBOL_CHARS = 64
# A replay line longer than this is rejected without being held in memory; a quote line is ~300 bytes.
MAX_LINE_BYTES = 64 * 1024

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


def rejection(reason: str, symbol: Any, payload: str) -> Rejection:
    """A Rejection whose fields are bounded, and whose symbol is a usable Kafka key, whatever the input."""
    if type(symbol) is str:
        # A lone surrogate ("\ud800" is valid JSON) cannot be encoded as a key; show it escaped instead.
        symbol = _short(symbol, MAX_SYMBOL_CHARS).encode("utf-8", "backslashreplace").decode("utf-8")
    else:
        symbol = None
    reason = reason.replace("\r", "\\r").replace("\n", "\\n")  # one line, whatever an exception said
    return Rejection(_short(reason, MAX_REASON_CHARS), symbol, payload[:MAX_PAYLOAD_CHARS])


def candidate_from_quote(symbol: Any, quote: Any, fetched_at: int) -> Candidate:
    """Check a Finnhub-shaped mapping for ``symbol``, fetched at ``fetched_at`` (epoch ms); return it as a
    candidate, or raise InvalidQuote.

    The check is the record contract itself (validate_record on the record this candidate becomes, with
    placeholder producer fields), so a candidate is always a record the publisher can send.
    May raise anything on inputs the contract never sees (a huge int, deep nesting): ``quote_item``
    turns every failure into a Rejection.
    """
    if type(symbol) is not str or not SYMBOL_PATTERN.match(symbol):
        raise InvalidQuote(f"symbol {short_repr(symbol)} is not a ticker")
    if not isinstance(quote, Mapping):
        raise InvalidQuote(f"quote must be a JSON object, got {type(quote).__name__}")
    validate_finnhub_quote(quote)  # first: its reasons (missing fields, all-zero quote) are the useful ones
    candidate = (symbol, *(quote[f] for f in FINNHUB_FIELDS), fetched_at)
    validate_record({
        "schema_version": SCHEMA_VERSION, "symbol": symbol, **{f: quote[f] for f in FINNHUB_FIELDS},
        "fetched_at": fetched_at, "source": SOURCES[0], "producer_run_id": "candidate-check", "seq": 0,
    })  # fmt: skip
    return candidate


def quote_item(symbol: Any, quote: Any, fetched_at: int, payload: str | None = None) -> Item:
    """``candidate_from_quote`` that never raises: a candidate, or a Rejection that says what is wrong.

    ``payload`` is what the DLQ shows (the line or body as received); by default, ``quote`` as text.
    """
    try:
        return candidate_from_quote(symbol, quote, fetched_at)
    except InvalidQuote as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - whatever the input does, it must not stop the producer
        reason = f"unusable quote: {_failure(exc)}"
    return rejection(reason, symbol, _payload_text(quote) if payload is None else payload)


def _payload_text(payload: Any) -> str:
    """At most MAX_PAYLOAD_CHARS of ``payload`` as text; never raises."""
    if isinstance(payload, str):
        return payload[:MAX_PAYLOAD_CHARS]
    try:
        text = json.dumps(payload, default=repr)
    except Exception:  # noqa: BLE001 - a huge int, deep nesting (RecursionError), odd keys
        try:
            text = repr(payload)
        except Exception:  # noqa: BLE001
            text = f"<unprintable {type(payload).__name__}>"
    return text[:MAX_PAYLOAD_CHARS]


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _failure(exc: BaseException) -> str:
    """What an unexpected exception says about the input, in a few words."""
    if isinstance(exc, RecursionError):
        return "nested too deeply (RecursionError)"
    try:
        detail = str(exc)
    except Exception:  # noqa: BLE001
        detail = ""
    return f"{type(exc).__name__}: {_short(detail, 160)}" if detail else type(exc).__name__


# --------------------------------------------------------------------------------------------- simulated


def simulated_symbols(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct ticker-like names: the default five first, then the other well-known tickers of
    REFERENCE_PRICES in table order, then (only beyond the table) seeded 2-4 letter names that are not
    well-known tickers."""
    if not 1 <= count <= MAX_SIMULATED_SYMBOLS:
        raise ValueError(f"symbol count must be between 1 and {MAX_SIMULATED_SYMBOLS}, got {count}")
    known = [*DEFAULT_SYMBOLS, *(s for s in REFERENCE_PRICES if s not in DEFAULT_SYMBOLS)]
    symbols = known[:count]
    seen = {*known, *REFERENCE_PRICES}
    rng = random.Random(f"symbols:{seed}")
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    while len(symbols) < count:
        name = "".join(rng.choices(letters, k=rng.choice((2, 3, 3, 4, 4, 4))))
        if name not in seen:
            seen.add(name)
            symbols.append(name)
    return symbols


def _previous_close_cents(symbol: str, u: float) -> int:
    """The simulated previous close of ``symbol`` in cents, from one uniform draw ``u`` in [0, 1).

    A well-known ticker starts at its reference price within +-REFERENCE_JITTER_BP (the change is cut
    toward the reference, so never outside the band); any other symbol log-uniform in UNKNOWN_PRICE_RANGE.
    """
    reference = REFERENCE_PRICES.get(symbol)
    if reference is None:
        low, high = math.log(UNKNOWN_PRICE_RANGE[0]), math.log(UNKNOWN_PRICE_RANGE[1])
        return round(math.exp(low + (high - low) * u) * 100)
    cents = reference * 100
    jitter_bp = int(u * (2 * REFERENCE_JITTER_BP + 1)) - REFERENCE_JITTER_BP
    change = cents * abs(jitter_bp) // 10_000
    return max(1, cents + change if jitter_bp >= 0 else cents - change)


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
        # One draw per symbol, well-known or not, so the draws that follow never depend on the table.
        self._pc = [_previous_close_cents(symbol, rng.random()) for symbol in self.symbols]
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
    sent, like a fetch, so it lands in the current minute; its ``t`` stays as recorded. A line that is not
    a usable quote (not UTF-8, not JSON, longer than MAX_LINE_BYTES, nested too deeply, refused by the
    record contract) becomes a Rejection with the reason; it never stops the replay.
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

    def _item(self, line: str | bytes, fetched_at: int) -> tuple[Item, float | None]:
        """The item for one line and its recorded time in seconds (None when it has none).

        Never raises: a line that fails anywhere in decoding or validation becomes a Rejection.
        """
        try:
            return self._parse(line, fetched_at)
        except Exception as exc:  # noqa: BLE001 - one bad line must not stop the replay
            return rejection(f"unusable line: {_failure(exc)}", None, _line_text(line)), None

    def _parse(self, line: str | bytes, fetched_at: int) -> tuple[Item, float | None]:
        if isinstance(line, bytes):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return rejection(f"not UTF-8: {exc.reason} at byte {exc.start}", None, _line_text(line)), None
        else:
            text = line
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            return rejection(f"not JSON: {exc.msg} at char {exc.pos}", None, text), None
        if not isinstance(obj, dict):
            return rejection(f"line must be a JSON object, got {type(obj).__name__}", None, text), None
        return quote_item(obj.get("symbol"), obj, fetched_at, text), _recorded_seconds(obj)

    def batches(self, stop: threading.Event) -> Generator[list[Item], None, None]:
        first_recorded: float | None = None
        start = time.monotonic()
        batch: list[Item] = []
        with self.path.open("rb") as lines:
            try:
                for line in _read_lines(lines):
                    if stop.is_set():
                        break
                    self.stats["lines"] += 1
                    # Checked against the clock now; a candidate stamped later stays valid (t is not later).
                    item, recorded = (
                        (line, None) if isinstance(line, Rejection) else self._item(line, self._clock_ms())
                    )
                    if self.pace == "fast":
                        batch.append(item)
                        if len(batch) >= self.batch_size:
                            yield batch
                            batch = []
                        continue
                    if recorded is not None and not isinstance(item, Rejection):
                        if first_recorded is None:
                            first_recorded = recorded
                        ahead = start + (recorded - first_recorded) - time.monotonic()
                        if ahead > 0 and stop.wait(ahead):
                            return
                        item = (*item[:-1], self._clock_ms())
                    yield [item]
            except Exception:
                if batch:
                    yield batch  # the good lines read before a read error still go out
                raise
        if batch:
            yield batch


def _read_lines(lines: BinaryIO) -> Iterator[bytes | Rejection]:
    """The file's non-blank lines, stripped; a line longer than MAX_LINE_BYTES becomes a Rejection and is
    skipped in chunks, never held in memory whole."""
    while True:
        raw = lines.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            size = len(raw)
            while True:
                rest = lines.readline(1 << 20)
                size += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            yield rejection(f"line of {size} bytes is longer than {MAX_LINE_BYTES}", None, _line_text(raw))
            continue
        line = raw.strip()
        if line:
            yield line


def _line_text(line: str | bytes) -> str:
    if isinstance(line, str):
        return line[:MAX_PAYLOAD_CHARS]
    return line[: MAX_PAYLOAD_CHARS * 4].decode("utf-8", "replace")[:MAX_PAYLOAD_CHARS]


def _recorded_seconds(obj: Mapping[str, Any]) -> float | None:
    """The line's recorded time in seconds, for pacing; None unless it is a plausible epoch time."""
    for key, scale in (("fetched_at", 1000), ("t", 1)):
        value = obj.get(key)
        # Bounded, so a bogus time can neither overflow a float nor make the replay wait for years.
        if (
            isinstance(value, int | float)
            and type(value) is not bool
            and MIN_EPOCH_S * scale <= value < MAX_EPOCH_S * scale
        ):
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
    FinnhubAuthError. A non-JSON body, a missing field, an all-zero quote or any reply the client or the
    record contract cannot use (too deeply nested, a number with thousands of digits) becomes a Rejection.
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
        self.scrub = Masker([self.api_key])
        self.client = finnhub.Client(api_key=self.api_key)
        self.client.DEFAULT_TIMEOUT = self.timeout
        if self.base_url:
            # The client builds "{API_URL}/{path}"; an instance attribute leaves other clients alone.
            self.client.API_URL = self.base_url.rstrip("/")
        # The last HTTP response, kept by a requests hook: when the client itself fails on a reply (a body
        # nested too deeply for its JSON parser, an error body that is not an object), the status and the
        # body still decide what happens and what the DLQ shows.
        self._last_response: Any = None
        session = getattr(self.client, "_session", None)
        if session is not None:
            session.hooks["response"].append(self._remember_response)

    def _remember_response(self, response: Any, *args: Any, **kwargs: Any) -> None:
        self._last_response = response

    def _body(self, response: Any = None) -> str | None:
        """The (scrubbed, bounded) body of ``response`` or of the last response; None if there is none."""
        response = response if response is not None else self._last_response
        if response is None:
            return None
        try:
            # Masked before it is cut short: a cut could leave a prefix of the key that no mask matches.
            return self.scrub(response.text)[:MAX_PAYLOAD_CHARS]
        except Exception:  # noqa: BLE001 - a body that cannot be shown is shown as nothing
            return ""

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
            self._last_response = None
            status: int | None = None
            response: Any = None
            message = ""
            try:
                payload = self.client.quote(symbol)
            except finnhub.FinnhubAPIException as exc:
                status, response = exc.status_code, exc.response
                message = exc.message if isinstance(exc.message, str) else short_repr(exc.message)
            except finnhub.FinnhubRequestException as exc:
                # The client raises this for a body it cannot parse; its message carries the body.
                body = str(exc.message).removeprefix("Invalid Response: ")
                reason = "not JSON: Finnhub answered a body that is not a JSON object"
                cause = exc.__context__  # the client raises it while handling the parser's ValueError
                if isinstance(cause, ValueError) and not isinstance(cause, json.JSONDecodeError):
                    reason = f"unusable reply from Finnhub: {_failure(cause)}"  # e.g. a 5,000-digit number
                return rejection(reason, symbol, self.scrub(body))
            except requests.RequestException as exc:
                error = self.scrub(f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # noqa: BLE001 - the client failed on the reply itself
                # A body nested too deeply for the JSON parser (RecursionError), an error body that is not
                # a JSON object (TypeError in the client's exception): the reply is unusable, the producer
                # goes on. An error status still counts as that status (retry, or auth error).
                response = self._last_response
                if response is None or response.ok:
                    return rejection(
                        f"unusable reply from Finnhub: {_failure(exc)}", symbol, self._body() or ""
                    )
                status, message = response.status_code, f"unreadable error body ({_failure(exc)})"
            else:
                item = quote_item(symbol, payload, self.clock_ms())
                if isinstance(item, Rejection):
                    # The DLQ shows the body as Finnhub sent it (read only for a rejection).
                    shown = self._body()
                    item = item if shown is None else Rejection(item.reason, item.symbol, shown)
                return item
            if status is not None:
                if status in (401, 403):
                    raise FinnhubAuthError(
                        f"Finnhub refused the API key (HTTP {status}); set FINNHUB_API_KEY to a valid key"
                    ) from None
                if status == 429:
                    self.stats["rate_limited"] += 1
                    delay = retry_after_seconds(response.headers.get("Retry-After"))
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
                    return rejection(
                        f"HTTP {status}: {self.scrub(message)}", symbol, self._body(response) or ""
                    )
                error = f"HTTP {status}"
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
