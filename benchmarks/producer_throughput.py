"""Producer throughput: the simulated source, 10,000 symbols, unthrottled, into a real local broker.

Runs `stock_platform.producer.cli` as a child process for ``--duration`` seconds and prints one JSON
object: messages/s (delivered, flush included), the slowest progress window, the producer's peak RSS
(from the kernel's accounting of that child alone), and the count the broker holds for the topic.

    .venv/bin/python benchmarks/producer_throughput.py                 # starts its own broker
    .venv/bin/python benchmarks/producer_throughput.py --bootstrap-servers 127.0.0.1:9092

Target on a 2-core machine: >= 100,000 messages/s sustained over 60 s, peak RSS < 300 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

TARGET_MSGS_PER_S = 100_000
TARGET_RSS_MIB = 300


def topic_message_count(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def run_producer(bootstrap: str, topic: str, args: argparse.Namespace) -> dict:
    argv = [
        sys.executable, "-m", "stock_platform.producer.cli",
        "--source", "simulated", "--symbol-count", str(args.symbols), "--rate", "0",
        "--duration", str(args.duration), "--bootstrap-servers", bootstrap, "--topic", topic,
        "--dlq-topic", f"{topic}-dlq", "--partitions", str(args.partitions), "--log-interval", "5",
    ]  # fmt: skip
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env={**os.environ, "FINNHUB_API_KEY": ""})
        # wait4 gives this child's own resource usage; ru_maxrss is its peak RSS in KiB on Linux.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"producer exited {proc.returncode}\n{stdout}\n{stderr[-3000:]}")
    summary = json.loads(stdout.strip().splitlines()[-1])
    rates = [
        entry["rate"]
        for entry in (json.loads(line) for line in stderr.splitlines() if line.startswith("{"))
        if entry.get("msg") == "progress"
    ]
    return {"summary": summary, "window_rates": rates, "peak_rss_mib": usage.ru_maxrss / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", default=None, help="use this broker instead of starting one")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--symbols", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=3)
    args = parser.parse_args()

    broker = None
    bootstrap = args.bootstrap_servers
    if bootstrap is None:
        from stock_platform.services.kafka import KafkaBroker

        data_dir = Path(tempfile.mkdtemp(prefix="producer-bench-kafka-"))
        broker = KafkaBroker(data_dir=data_dir).start()
        bootstrap = broker.bootstrap_servers
    try:
        topic = f"bench-quotes-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        result = run_producer(bootstrap, topic, args)
        summary = result["summary"]
        in_topic = topic_message_count(bootstrap, topic)
        # The first window includes start-up (topic creation, idempotent PID); the last may be partial.
        steady = result["window_rates"][1:-1] or result["window_rates"]
        figures = {
            "symbols": args.symbols,
            "duration_s": summary["elapsed_s"],
            "messages_delivered": summary["delivered"],
            "messages_in_topic": in_topic,
            "messages_per_s": round(summary["delivered"] / summary["elapsed_s"]),
            "slowest_5s_window_msgs_per_s": round(min(steady)) if steady else None,
            "peak_rss_mib": round(result["peak_rss_mib"], 1),
            "failed": summary["failed"],
            "backpressure_waits": summary["backpressure_waits"],
            "cpu_count": os.cpu_count(),
            "wall_s": round(time.monotonic() - started, 1),
        }
        figures["meets_target"] = (
            figures["messages_per_s"] >= TARGET_MSGS_PER_S and figures["peak_rss_mib"] < TARGET_RSS_MIB
        )
        print(json.dumps(figures, indent=2))
        return 0 if figures["meets_target"] and in_topic == summary["delivered"] else 1
    finally:
        if broker is not None:
            broker.stop()
            shutil.rmtree(broker.data_dir, ignore_errors=True)  # ~1 GB of log segments per minute of run


if __name__ == "__main__":
    sys.exit(main())
