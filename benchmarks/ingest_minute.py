"""Benchmark the per-minute ingestion: fixed cost at Finnhub's volume, and throughput at scale.

1. small: a closed minute of 1,800 quotes; in-process time of kafka_quote_batch, raw_quote_object and
   raw_quote_table (step durations, no run launch) and of the whole `dg.materialize` call; median of runs.
2. large: a closed minute of 1,000,000 quotes; Kafka → raw object → DuckDB raw table in a child process
   (quotes/s, peak RSS), beside a bare confluent-kafka loop that only consumes the same offset range in
   another child process, with librdkafka's defaults and with the pipeline's read settings (the limit:
   what the client delivers to Python).

Prints one JSON document. Starts its own Kafka broker (stock_platform.services.kafka) unless
--bootstrap-servers is given.

    .venv/bin/python benchmarks/ingest_minute.py [--large-quotes 1000000] [--partitions 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")  # Dagster's beta/preview warnings would clutter the JSON output

import dagster as dg  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from stock_platform.ingestion.assets import (  # noqa: E402
    kafka_quote_batch,
    raw_quote_object,
    raw_quote_table,
    stock_quotes_topic,
)
from stock_platform.partitions import minute_key, minute_window_ms  # noqa: E402
from stock_platform.quotes import encode_record  # noqa: E402
from stock_platform.resources.kafka import KafkaResource  # noqa: E402
from stock_platform.resources.kafka_reader import READ_TUNING  # noqa: E402
from stock_platform.resources.object_store import LocalObjectStore  # noqa: E402
from stock_platform.resources.warehouse import DuckDBWarehouse  # noqa: E402

ASSETS = [stock_quotes_topic, kafka_quote_batch, raw_quote_object, raw_quote_table]


def record(seq: int, ts: int, symbols: int) -> bytes:
    price = 100.0 + (seq % 1000) / 100
    return encode_record(
        {
            "schema_version": 1,
            "symbol": f"SYM{seq % symbols}",
            "c": price,
            "d": 0.5,
            "dp": 0.5,
            "h": price + 1,
            "l": price - 1,
            "o": price - 0.25,
            "pc": price - 0.5,
            "t": ts // 1000,
            "fetched_at": ts,
            "source": "simulated",
            "producer_run_id": "benchmark",
            "seq": seq,
        }
    )


def create_topic(bootstrap: str, partitions: int) -> str:
    # CreateTime: the benchmark fills a past minute at chosen timestamps, which append time cannot do
    # (its KafkaResource says so with require_log_append_time=False).
    name = f"bench-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    return name


def fill_minute(bootstrap: str, topic: str, partition_key: str, count: int, partitions: int) -> None:
    start_ms, _ = minute_window_ms(partition_key)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
        }  # fmt: skip
    )
    for seq in range(count):
        ts = start_ms + seq * 59_999 // count
        while True:
            try:
                producer.produce(
                    topic,
                    record(seq, ts, 10_000),
                    key=f"SYM{seq % 10_000}",
                    partition=seq % partitions,
                    timestamp=ts,
                )
                break
            except BufferError:
                producer.poll(0.05)
        if seq % 50_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0


def resources(bootstrap: str, topic: str, work: Path, read_workers: int = 2) -> dict:
    return {
        "kafka": KafkaResource(
            bootstrap_servers=bootstrap,
            topic=topic,
            ingest_group=f"bench-{topic}",
            read_workers=read_workers,
            require_log_append_time=False,
        ),
        "object_store": LocalObjectStore(root=str(work / "lake")),
        "warehouse": DuckDBWarehouse(path=str(work / "warehouse.duckdb")),
    }


def step_seconds(result: dg.ExecuteInProcessResult) -> dict[str, float]:
    return {
        e.step_key: e.event_specific_data.duration_ms / 1000
        for e in result.all_events
        if e.event_type_value == "STEP_SUCCESS"
    }


def small(bootstrap: str, work: Path, quotes: int, runs: int) -> dict:
    topic = create_topic(bootstrap, 1)
    key = minute_key(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30))
    fill_minute(bootstrap, topic, key, quotes, 1)
    res = resources(bootstrap, topic, work / "small")
    dg.materialize(ASSETS, partition_key=key, resources=res)  # warm imports, DuckDB file, connections
    steps, walls = [], []
    for _ in range(runs):
        started = time.perf_counter()
        result = dg.materialize(ASSETS, partition_key=key, resources=res)
        walls.append(time.perf_counter() - started)
        steps.append(step_seconds(result))
    object_and_table = [s["raw_quote_object"] + s["raw_quote_table"] for s in steps]
    return {
        "quotes": quotes,
        "runs": runs,
        "raw_object_plus_raw_table_s_median": round(statistics.median(object_and_table), 4),
        "raw_object_plus_raw_table_s_max": round(max(object_and_table), 4),
        "kafka_batch_s_median": round(statistics.median(s["kafka_quote_batch"] for s in steps), 4),
        "three_steps_s_median": round(statistics.median(sum(s.values()) for s in steps), 4),
        "dg_materialize_wall_s_median": round(statistics.median(walls), 4),
        "target_s": 0.5,
    }


def child(args: argparse.Namespace) -> None:
    """Run in a fresh process so peak RSS is that of the measured work alone."""
    work = Path(args.work)
    if args.child in ("bare", "bare-tuned"):
        ranges = json.loads(args.ranges)
        consumer = Consumer(
            {
                "bootstrap.servers": args.bootstrap_servers,
                "group.id": f"bare-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                # The pipeline's librdkafka read settings: what the client can deliver to Python.
                **(READ_TUNING if args.child == "bare-tuned" else {}),
            }  # fmt: skip
        )
        pending = {int(p): (s, e) for p, (s, e) in ranges.items() if e > s}
        left = sum(e - s for s, e in pending.values())
        started = time.perf_counter()
        consumer.assign([TopicPartition(args.topic, p, s) for p, (s, _) in pending.items()])
        consumed = 0
        while consumed < left:
            for message in consumer.consume(10_000, timeout=1.0):
                if message.error() is None:
                    consumed += 1
        seconds = time.perf_counter() - started
        consumer.close()
        out = {"quotes": consumed, "seconds": seconds}
    else:
        res = resources(args.bootstrap_servers, args.topic, work, args.read_workers)
        # The run's Dagster instance is set up before the clock starts, as the bare loop creates nothing
        # before its clock either: it is a per-process cost (imports of Dagster's storage, 1.5-2 s here
        # without bytecode caches, PYTHONDONTWRITEBYTECODE=1), the same for a minute of 1,800 quotes.
        setup_started = time.perf_counter()
        instance = dg.DagsterInstance.ephemeral()
        setup_s = time.perf_counter() - setup_started
        started = time.perf_counter()
        result = dg.materialize(ASSETS, partition_key=args.key, resources=res, instance=instance)
        seconds = time.perf_counter() - started
        rows = {
            e.asset_key.to_user_string(): e.materialization.metadata["rows"].value
            for e in result.get_asset_materialization_events()
            if "rows" in e.materialization.metadata
        }
        out = {"quotes": rows["raw_quote_table"], "object_rows": rows["raw_quote_object"], "seconds": seconds,
               "steps_s": step_seconds(result), "instance_setup_s": setup_s}  # fmt: skip
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Parallel read workers are child processes: the largest one's peak, reported beside the parent's.
    out["worker_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(out))


def run_child(
    kind: str, bootstrap: str, topic: str, key: str, work: Path, ranges: dict | None = None, workers: int = 1
) -> dict:
    argv = [sys.executable, __file__, "--child", kind, "--bootstrap-servers", bootstrap, "--topic", topic,
            "--key", key, "--work", str(work), "--ranges", json.dumps(ranges or {}),
            "--read-workers", str(workers)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def large(bootstrap: str, work: Path, quotes: int, partitions: int, workers: int) -> dict:
    topic = create_topic(bootstrap, partitions)
    key = minute_key(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20))
    started = time.perf_counter()
    fill_minute(bootstrap, topic, key, quotes, partitions)
    produce_s = time.perf_counter() - started
    batch = KafkaResource(
        bootstrap_servers=bootstrap, topic=topic, require_log_append_time=False
    ).minute_batch(key)
    ranges = {str(r.partition): [r.start, r.end] for r in batch.ranges}
    bare = run_child("bare", bootstrap, topic, key, work / "large", ranges)
    tuned = run_child("bare-tuned", bootstrap, topic, key, work / "large", ranges)
    pipeline = run_child("pipeline", bootstrap, topic, key, work / "large", workers=workers)
    object_bytes = sum(p.stat().st_size for p in (work / "large" / "lake" / "raw").rglob("*.ndjson.gz"))
    pipeline_rate = pipeline["quotes"] / pipeline["seconds"]
    bare_rate = bare["quotes"] / bare["seconds"]
    tuned_rate = tuned["quotes"] / tuned["seconds"]
    return {
        "quotes": quotes,
        "kafka_partitions": partitions,
        "produce_s": round(produce_s, 2),
        "pipeline": {
            "seconds": round(pipeline["seconds"], 2),
            "quotes_per_s": round(pipeline_rate),
            "peak_rss_mib": round(pipeline["peak_rss_mib"]),
            "read_workers": workers,
            "largest_child_process_peak_rss_mib": round(pipeline["worker_peak_rss_mib"]),
            "steps_s": {k: round(v, 2) for k, v in pipeline["steps_s"].items()},
            "instance_setup_s_not_timed": round(pipeline["instance_setup_s"], 2),
            "rows_in_table": pipeline["quotes"],
            "object_mib": round(object_bytes / 2**20, 1),
        },
        "bare_consumer": {
            "seconds": round(bare["seconds"], 2),
            "quotes_per_s": round(bare_rate),
            "peak_rss_mib": round(bare["peak_rss_mib"]),
        },
        # The same loop with the pipeline's read settings (READ_TUNING): librdkafka's default fetch
        # backoff throttles the plain loop above, so this is the client's own limit.
        "bare_consumer_read_tuning": {
            "seconds": round(tuned["seconds"], 2),
            "quotes_per_s": round(tuned_rate),
            "peak_rss_mib": round(tuned["peak_rss_mib"]),
        },
        "pipeline_over_bare": round(pipeline_rate / bare_rate, 3),
        "pipeline_over_bare_read_tuning": round(pipeline_rate / tuned_rate, 3),
        "targets": {"quotes_per_s": 150_000, "pipeline_over_bare": 0.7, "peak_rss_mib": 1024},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap-servers", help="use this Kafka instead of starting one")
    parser.add_argument("--small-quotes", type=int, default=1_800)
    parser.add_argument("--small-runs", type=int, default=7)
    parser.add_argument("--large-quotes", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=1, help="Kafka partitions of the large topic")
    parser.add_argument(
        "--read-workers", type=int, default=2, help="KafkaResource.read_workers for the large minute"
    )
    parser.add_argument("--child", choices=["bare", "bare-tuned", "pipeline"], help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--ranges", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    broker = None
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as folder:
        work = Path(folder)
        bootstrap = args.bootstrap_servers
        if bootstrap is None:
            from stock_platform.services.kafka import KafkaBroker

            broker = KafkaBroker(work / "kafka", heap="1g").start()
            bootstrap = broker.bootstrap_servers
        try:
            report = {"small_minute": small(bootstrap, work, args.small_quotes, args.small_runs)}
            if args.large_quotes:
                report["large_minute"] = large(
                    bootstrap, work, args.large_quotes, args.partitions, args.read_workers
                )
        finally:
            if broker is not None:
                broker.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
