"""End to end with the real broker and the real Dagster daemon, nobody clicking: a stream with every kind
of disorder a real feed produces reaches the raw table, silver and gold, and ends with every good record
exactly once, every bad one dead-lettered with its reason, lag 0, and gold equal to figures computed here
from the input.

The disorder: producers whose clocks are an hour ahead or a day behind, a replay of hours-old quotes,
duplicates at other offsets, a redelivery minutes later, an earlier fetch of a quote arriving after the
later one (which silver and gold must then replace), a late quote for an old candle, ties on every sort
key, and bad records of several kinds (including ones the JSON decoder cannot handle and a record keyed
by another symbol), spread over two minutes of arrival.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from stock_platform.partitions import minute_key_from_ms, minute_window_ms
from stock_platform.resources.kafka import KafkaResource
from stock_platform.services.paths import PROJECT_ROOT
from stock_platform.services.process import log_tail, stop_process
from stock_platform.services.raw_quotes import Quote
from stock_platform_tests.ingestion.ingest_helpers import produce
from stock_platform_tests.isolated_platform import isolated_platform_env
from stock_platform_tests.kafka_topics import by_offset
from stock_platform_tests.transform import expected_gold

pytestmark = pytest.mark.integration

SYMBOLS = ("AAPL", "AMZN", "GOOGL", "MSFT", "TSLA")


@dataclass(frozen=True)
class Sent:
    """One message as produced: a good quote (``quote``) or a bad value with the reason it must get."""

    partition: int
    value: bytes
    quote: Quote | None = None
    reason: str | None = None
    key: bytes | None = None  # None: the record's symbol, as the producer keys it


def good(partition: int, q: Quote) -> Sent:
    return Sent(partition, json.dumps(q.record(), separators=(",", ":")).encode(), quote=q)


def bad(partition: int, value: bytes, reason: str, key: bytes | None = None) -> Sent:
    return Sent(partition, value, reason=reason, key=key)


def first_wave(now_ms: int) -> tuple[list[Sent], dict[str, Quote]]:
    """The first minute's messages, and the quotes the second wave refers to."""
    now_s = now_ms // 1000
    sent: list[Sent] = []
    # On time: each symbol every 5 s over the last 40 s.
    for seq in range(40):
        q = Quote(
            SYMBOLS[seq % 5], now_s - 40 + seq, now_ms - 40_000 + seq * 1000 + 7, 100.0 + seq, seq, "live"
        )
        sent.append(good(seq % 2, q))
    # A producer an hour ahead and one a day behind: fetched_at (and their simulated t) follow their
    # clocks; the broker files them under the minute they arrive in.
    for i in range(4):
        ahead = now_ms + 3_600_000 + i
        sent.append(good(i % 2, Quote("NVDA", ahead // 1000 + i, ahead, 500.0 + i, i, "clock-ahead")))
        behind = now_ms - 86_400_000 + i
        sent.append(good(i % 2, Quote("AMD", behind // 1000 + i, behind, 90.0 + i, i, "clock-behind")))
    # A replay of quotes three hours old, fetched (replayed) now.
    for i in range(5):
        sent.append(
            good(i % 2, Quote("AAPL", now_s - 3 * 3600 + 60 * i, now_ms + i, 150.0 + i, i, "replay-1"))
        )
    # Kafka duplicates: the same record twice more, on another partition too.
    sent.append(good(1, sent[3].quote))  # type: ignore[arg-type]
    sent.append(good(0, sent[3].quote))  # type: ignore[arg-type]
    # Ties on quote time and fetched_at for one symbol: two producers, same instant, different prices;
    # the record id decides (the lower wins).
    sent.append(good(0, Quote("INTC", now_s - 10, now_ms - 10_000, 30.0, 1, "tie-b")))
    sent.append(good(1, Quote("INTC", now_s - 10, now_ms - 10_000, 31.0, 1, "tie-a")))
    # Bad records: each must be dead-lettered with its reason, none may stop the minute.
    template = Quote("AAPL", now_s - 5, now_ms - 5_000, 101.0, 900, "live").record()

    def mutated(**changes) -> bytes:
        return json.dumps({**template, **changes}, separators=(",", ":")).encode()

    sent += [
        bad(0, b"[" * 2000 + b"]" * 2000, "undecodable record (RecursionError)"),
        bad(1, b'{"symbol": "AAPL", "c": ', "not JSON: Expecting value at char 24"),
        bad(0, mutated(symbol="AAPL\n"), "symbol 'AAPL\\n' is not a ticker (A-Z, 0-9, '.', '-', ':', at most 20, nothing else)"),
        bad(1, mutated(c=True), "field 'c' must be a number, got bool"),
        bad(0, mutated(t=template["t"] + 0.5), f"quote time 't' must be an integer (epoch seconds), got {template['t'] + 0.5!r}"),
        bad(1, mutated(c=1e300, h=1e300), "price field 'c' is outside [0.0001, 1e+07]: 1e+300"),
        bad(0, mutated(), "Kafka message has key 'MSFT', not the record's symbol 'AAPL'", key=b"MSFT"),
        bad(1, b"\xff\xfe{}", "not UTF-8: invalid start byte at byte 0"),
    ]  # fmt: skip
    latest_tsla = max((s.quote for s in sent if s.quote and s.quote.symbol == "TSLA"), key=lambda q: q.t)
    oldest_msft = min((s.quote for s in sent if s.quote and s.quote.symbol == "MSFT"), key=lambda q: q.t)
    return sent, {"latest_tsla": latest_tsla, "oldest_msft": oldest_msft, "redelivered": sent[5].quote}  # type: ignore[dict-item]


def second_wave(now_ms: int, refs: dict[str, Quote]) -> list[Sent]:
    now_s = now_ms // 1000
    # New quotes for every symbol but TSLA, whose latest quote the earlier fetch below must replace.
    sent = [good(seq % 2, Quote(SYMBOLS[seq % 4], now_s - 3 + seq // 4, now_ms + seq, 200.0 + seq, 100 + seq, "live"))
            for seq in range(10)]  # fmt: skip
    latest = refs["latest_tsla"]
    sent += [
        # A redelivery of a record loaded a minute ago.
        good(1, refs["redelivered"]),
        # An earlier fetch of TSLA's latest quote, arriving after it with another price: silver keeps the
        # earliest fetch, so silver and gold_kpi must switch to it.
        good(0, Quote("TSLA", latest.t, latest.fetched_at_ms - 400, 999.0, 7, "early-fetch")),
        # A late quote for MSFT's oldest candle, a minute before its first quote: a new open and low.
        good(1, Quote("MSFT", refs["oldest_msft"].t - 1, now_ms - 1, 1.5, 8, "early-fetch")),
        bad(0, b"null", "record must be a JSON object, got NoneType"),
    ]
    return sent


def send(bootstrap: str, topic: str, messages: list[Sent], stamp_ms: int) -> None:
    produce(
        bootstrap, topic, [(m.partition, stamp_ms, m.value, *([m.key] if m.key else [])) for m in messages]
    )


def wait_until_ingested(
    kafka: KafkaResource, instance: dg.DagsterInstance, minute: str, daemon, log, timeout_s
):
    """Until a successful run covers ``minute``, the ingest group has no lag and the gold view exists
    (created by its automation condition after silver's first update); fail on a failed run."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert daemon.poll() is None, f"the daemon exited:\n{log_tail(log, 60)}"
        done = False
        for run in instance.get_runs(limit=40):  # the minute runs and the view's automation run
            covered = run.tags.get("dagster/partition") or run.tags.get("dagster/asset_partition_range_end")
            if run.status == dg.DagsterRunStatus.FAILURE:
                pytest.fail(f"run {run.run_id} for {covered} failed:\n{log_tail(log, 80)}")
            done = done or (
                run.status == dg.DagsterRunStatus.SUCCESS and covered is not None and covered >= minute
            )
        view = instance.get_latest_materialization_event(dg.AssetKey("gold_treechart"))
        if done and view is not None and sum(lag.lag for lag in kafka.consumer_lag()) == 0:
            return
        time.sleep(2)
    pytest.fail(f"no successful run reached minute {minute} in {timeout_s:.0f} s:\n{log_tail(log, 80)}")


def expected_silver(rows: list[tuple[str, int, int, Quote]]) -> dict[tuple[str, int], tuple]:
    """One row per (symbol, t): the least by (fetched_at, record id, loaded minute, partition, offset)."""
    best: dict[tuple[str, int], tuple] = {}
    for minute, partition, offset, q in rows:
        rank = (q.fetched_at_ms, q.record_id, minute, partition, offset)
        key = (q.symbol, q.t)
        if key not in best or rank < best[key][0]:
            best[key] = (rank, q)
    return {key: (q.record_id, q.price, rank[2], rank[3], rank[4]) for key, (rank, q) in best.items()}


def test_a_disordered_stream_reaches_gold_exactly_once_through_the_daemon(kafka_broker, tmp_path):
    bootstrap = kafka_broker.bootstrap_servers
    env = isolated_platform_env(bootstrap, tmp_path, partitions=2, prefix="e2e")
    topic, dagster_home = env["KAFKA_TOPIC"], Path(env["DAGSTER_HOME"])
    kafka = KafkaResource(bootstrap_servers=bootstrap, topic=topic, ingest_group=env["KAFKA_INGEST_GROUP"])
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        now_ms = int(time.time() * 1000)
        wave1, refs = first_wave(now_ms)
        send(bootstrap, topic, wave1, stamp_ms=now_ms - 86_400_000)  # a producer clock a day off
        # The second wave arrives in a later minute than the first.
        time.sleep(
            max(0.0, (minute_window_ms(minute_key_from_ms(int(time.time() * 1000)))[1] / 1000) - time.time())
            + 0.5
        )
        later_ms = int(time.time() * 1000)
        wave2 = second_wave(later_ms, refs)
        send(bootstrap, topic, wave2, stamp_ms=later_ms + 3_600_000)  # and an hour ahead
        last_minute = minute_key_from_ms(int(time.time() * 1000))
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            wait_until_ingested(kafka, instance, last_minute, daemon, log, timeout_s=300)
    finally:
        stop_process(daemon.pid)

    messages = by_offset(wave1 + wave2)
    goods = {at: m for at, m in messages.items() if m.quote is not None}
    bads = {at: m for at, m in messages.items() if m.reason is not None}
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        raw = conn.execute(
            "select strftime(minute, '%Y-%m-%d-%H:%M'), kafka_partition, kafka_offset, v->>'$.quote.seq', "
            "v->>'$.quote.producer_run_id' from main.bronze_stock_quotes_raw"
        ).fetchall()
        silver = conn.execute(
            "select symbol, epoch(quote_ts)::bigint, record_id, price, strftime(minute, '%Y-%m-%d-%H:%M'), "
            "kafka_partition, kafka_offset from silver.silver_quotes"
        ).fetchall()
        kpi = conn.execute("select symbol, price, as_of from gold.gold_kpi").fetchall()
        candles = conn.execute(
            "select symbol, grain, bucket_start, open, high, low, close, sample_count from gold.gold_candlestick"
        ).fetchall()
        treechart = conn.execute(
            "select symbol, candle_count, return_count, avg_price, last_price, volatility, relative_volatility "
            "from gold.gold_treechart"
        ).fetchall()

    # Raw: every good record exactly once, in the minute it arrived; no bad one.
    assert sorted((p, o) for _, p, o, _, _ in raw) == sorted(goods)
    for minute, p, o, seq, run_id in raw:
        q = goods[(p, o)].quote
        assert (int(seq), run_id) == (q.seq, q.producer_run_id)  # type: ignore[union-attr]
        # Filed under the minute of arrival, whatever the producer's clock stamped.
        assert minute_key_from_ms(now_ms) <= minute <= last_minute
    # Dead letters: every bad record, at its offset, with its reason.
    dead = {}
    for path in (tmp_path / "lake" / "dead_letter").rglob("*.ndjson.gz"):
        for line in gzip.decompress(path.read_bytes()).splitlines():
            d = json.loads(line)
            dead[(d["kafka_partition"], d["kafka_offset"])] = d["reason"]
    assert dead == {at: m.reason for at, m in bads.items()}
    # Lag 0: the group committed every offset.
    assert sum(lag.lag for lag in kafka.consumer_lag()) == 0

    # Silver: one row per (symbol, quote time), by the documented tie rule, computed here.
    loaded = [(minute, p, o, goods[(p, o)].quote) for minute, p, o, _, _ in raw]
    assert {(s, t): (rid, price, m, p, o) for s, t, rid, price, m, p, o in silver} == expected_silver(loaded)  # type: ignore[arg-type]
    survivors = [q for _, _, _, q in loaded if q is not None]
    reference = expected_gold.silver(survivors)
    assert {(q.symbol, q.t, q.record_id) for q in reference} == {(s, t, rid) for s, t, rid, *_ in silver}
    # The earlier fetch of TSLA's latest quote replaced it, in silver and in gold_kpi.
    assert dict((s, price) for s, price, _ in kpi)["TSLA"] == 999.0
    assert {expected_gold.rounded(r) for r in kpi} == expected_gold.kpi(reference)
    assert {expected_gold.rounded(r) for r in candles} == expected_gold.candles(reference)
    tree = expected_gold.treechart(reference)
    assert {s for s, *_ in treechart} == set(tree)
    for symbol, candle_count, return_count, avg_price, last_price, volatility, relative in treechart:
        figures = tree[symbol]
        assert (candle_count, return_count) == (figures["candle_count"], figures["return_count"]), symbol
        assert avg_price == pytest.approx(figures["avg_price"]) and last_price == pytest.approx(
            figures["last_price"]
        )
        for got, want in ((volatility, figures["volatility"]), (relative, figures["relative_volatility"])):
            assert (got is None and want is None) or got == pytest.approx(want), symbol
    assert dt.datetime.now(dt.UTC).year >= 2026
