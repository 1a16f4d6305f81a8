"""The producer as a process: SIGTERM loses nothing, replay files, and an unreachable Kafka."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from stock_platform.producer import cli
from stock_platform.quotes import decode_record
from stock_platform.services.process import free_port
from stock_platform.settings import load_settings
from stock_platform_tests.producer.kafka_helpers import consume_all, values

REPO = Path(__file__).resolve().parents[2]


def wait_for_log(proc: subprocess.Popen, msg: str, timeout_s: float) -> list[str]:
    """Read stderr lines until one is a JSON log entry with ``msg``; return the lines read."""
    assert proc.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stderr, selectors.EVENT_READ)
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not selector.select(timeout=0.2):
            continue
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("{") and json.loads(line).get("msg") == msg:
            return seen
    raise AssertionError(f"no {msg!r} log line within {timeout_s} s; stderr so far:\n{''.join(seen)}")


@pytest.mark.integration
def test_sigterm_flushes_and_every_delivered_quote_is_in_the_topic_once(kafka_broker):
    topic = f"quotes-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stock_platform.producer.cli", "--source", "simulated", "--symbol-count", "200",
         "--rate", "20000", "--bootstrap-servers", kafka_broker.bootstrap_servers, "--topic", topic,
         "--dlq-topic", f"{topic}-dlq", "--log-interval", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "FINNHUB_API_KEY": ""},
    )  # fmt: skip
    try:
        wait_for_log(proc, "progress", timeout_s=30)  # it is publishing
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["produced"] > 1000
    assert summary["delivered"] == summary["produced"]
    assert (summary["failed"], summary["undelivered"], summary["rejected"]) == (0, 0, 0)

    records = [decode_record(m.value()) for m in consume_all(kafka_broker.bootstrap_servers, topic)]
    assert {r["producer_run_id"] for r in records} == {summary["producer_run_id"]}
    # Exactly once: every seq the producer counted as delivered, no gaps, no duplicates.
    assert sorted(r["seq"] for r in records) == list(range(summary["delivered"]))


@pytest.mark.integration
def test_replay_file_to_kafka(kafka_broker, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FINNHUB_API_KEY", raising=False)
    topic = f"quotes-{uuid.uuid4().hex[:8]}"
    quote = {"symbol": "AAPL", "c": 261.74, "d": 1.55, "dp": 0.5957, "h": 263.31, "l": 260.68, "o": 261.07,
             "pc": 260.19, "t": 1764316800}  # fmt: skip
    path = tmp_path / "recorded.jsonl"
    path.write_text(
        "\n".join([json.dumps(quote), json.dumps({**quote, "symbol": "MSFT"}), "garbage",
                   json.dumps({**quote, "symbol": "NOPE", "c": 0, "d": 0, "dp": 0, "h": 0, "l": 0, "o": 0,
                               "pc": 0, "t": 0})]) + "\n"
    )  # fmt: skip

    code = cli.main(["--source", "replay", "--replay-file", str(path), "--pace", "fast",
                     "--bootstrap-servers", kafka_broker.bootstrap_servers, "--topic", topic,
                     "--dlq-topic", f"{topic}-dlq"])  # fmt: skip

    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["produced"], summary["rejected"], summary["lines"]) == (2, 2, 4)
    records = [decode_record(m.value()) for m in consume_all(kafka_broker.bootstrap_servers, topic)]
    assert sorted((r["symbol"], r["source"], r["t"], r["c"]) for r in records) == [
        ("AAPL", "replay", 1764316800, 261.74), ("MSFT", "replay", 1764316800, 261.74),
    ]  # fmt: skip
    letters = values(consume_all(kafka_broker.bootstrap_servers, f"{topic}-dlq"))
    assert len(letters) == 2
    assert {(d["symbol"], d["reason"], d["source"]) for d in letters} == {
        ("NOPE", "all-zero quote (Finnhub's answer for an unknown symbol)", "replay"),
        (None, "not JSON: Expecting value at char 0", "replay"),
    }


def test_unreachable_kafka_is_reported_clearly(capsys, monkeypatch):
    monkeypatch.delenv("FINNHUB_API_KEY", raising=False)
    address = f"127.0.0.1:{free_port()}"

    started = time.monotonic()
    code = cli.main(["--source", "simulated", "--bootstrap-servers", address, "--connect-timeout", "1",
                     "--max-quotes", "10"])  # fmt: skip

    assert code == 1
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert f"Kafka is unreachable at {address}" in err
    assert "KAFKA_BOOTSTRAP_SERVERS" in err


def test_finnhub_without_a_key_is_a_usage_error(capsys, monkeypatch):
    monkeypatch.delenv("FINNHUB_API_KEY", raising=False)
    assert cli.main(["--source", "finnhub", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert "FINNHUB_API_KEY" in capsys.readouterr().err


def test_the_default_source_follows_the_api_key():
    import argparse

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args([])
    assert cli.build_source(args, load_settings({})).name == "simulated"
    assert cli.build_source(args, load_settings({"FINNHUB_API_KEY": "k"})).name == "finnhub"


@pytest.mark.integration
def test_a_producer_killed_and_restarted_duplicates_nothing(kafka_broker):
    """kill -9 loses only what Kafka never acknowledged; the restart is a new run whose quotes all land."""
    topic = f"quotes-{uuid.uuid4().hex[:8]}"

    def producer(*extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "stock_platform.producer.cli", "--source", "simulated", "--symbol-count",
             "200", "--rate", "20000", "--bootstrap-servers", kafka_broker.bootstrap_servers, "--topic", topic,
             "--dlq-topic", f"{topic}-dlq", "--log-interval", "0.5", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env={**os.environ, "FINNHUB_API_KEY": ""},
        )  # fmt: skip

    killed = producer()
    try:
        wait_for_log(killed, "progress", timeout_s=30)
        deadline = time.monotonic() + 30
        while len(consume_all(kafka_broker.bootstrap_servers, topic)) < 1000:  # acknowledged by Kafka
            assert time.monotonic() < deadline, "the producer delivered nothing in 30 s"
            time.sleep(0.2)
        killed.kill()  # SIGKILL: no flush, no summary
        killed.wait(timeout=30)
    finally:
        if killed.poll() is None:
            killed.kill()
    restarted = producer("--max-quotes", "5000")
    out, err = restarted.communicate(timeout=120)
    assert restarted.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])

    records = [decode_record(m.value()) for m in consume_all(kafka_broker.bootstrap_servers, topic)]
    ids = [(r["producer_run_id"], r["seq"]) for r in records]
    assert len(ids) == len(set(ids)), "a quote reached the topic twice"
    by_run: dict[str, list[int]] = {}
    for run_id, seq in ids:
        by_run.setdefault(run_id, []).append(seq)
    assert sorted(by_run.pop(summary["producer_run_id"])) == list(range(5000))
    assert len(by_run) == 1, {k: len(v) for k, v in by_run.items()}
    [first_run] = by_run.values()  # the killed run: what Kafka acknowledged before the kill, once each
    assert len(first_run) > 1000
