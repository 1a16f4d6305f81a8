"""Sensor tick time with a year of per-minute partitions defined and 10,000 symbols' worth of lag.

1. Key arithmetic on a 365-day per-minute TimeWindowPartitionsDefinition (525,600 minutes): the lookups
   a tick makes (minute keys, the definition's start, the earliest-key comparison) timed per call.
2. The real ``kafka_lag_sensor`` evaluated with ``dg.build_sensor_context`` against a real broker topic
   holding 10,000 symbols' quotes over several closed minutes (nothing committed: all of it is lag) plus
   the open minute, on a SQLite Dagster instance holding many runs of the sensor and gold
   materializations; the sensor sees the 365-day definition (patched in for its ``minute_partitions``).
   Ticks run with a fresh cursor (plans every closed minute) and with the cursor carried over.
   Partition-key enumeration on the definition is counted during the ticks: it must stay 0.

Prints one JSON document (p50/p95/max tick seconds; target < 2 s). Starts its own broker unless
--bootstrap-servers is given.

    .venv/bin/python benchmarks/sensor_tick.py [--ticks 25] [--symbols 10000] [--runs 5000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
import uuid
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import dagster as dg  # noqa: E402
from bench_common import broker, create_topic, emit, produce_grid, summary  # noqa: E402

from stock_platform.orchestration import sensors  # noqa: E402
from stock_platform.orchestration.checks import GOLD_ASSETS  # noqa: E402
from stock_platform.orchestration.sensors import LagSensorConfig, kafka_lag_sensor  # noqa: E402
from stock_platform.partitions import build_minute_partitions, is_known_minute, minute_key  # noqa: E402
from stock_platform.resources.kafka import KafkaResource  # noqa: E402
from stock_platform.runner import prepare_dagster_home  # noqa: E402

TARGET_S = 2.0


class EnumerationCounter:
    """Counts calls of the TimeWindowPartitionsDefinition methods that walk every key."""

    METHODS = ("get_partition_keys", "get_num_partitions", "get_partition_keys_in_range")

    def __init__(self) -> None:
        self.calls: dict[str, int] = dict.fromkeys(self.METHODS, 0)
        self._saved: dict[str, object] = {}

    def __enter__(self) -> EnumerationCounter:
        cls = dg.TimeWindowPartitionsDefinition
        for name in self.METHODS:
            original = getattr(cls, name)
            self._saved[name] = original

            def wrapper(*args, _name=name, _original=original, **kwargs):
                self.calls[_name] += 1
                return _original(*args, **kwargs)

            setattr(cls, name, wrapper)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self._saved.items():
            setattr(dg.TimeWindowPartitionsDefinition, name, original)


def time_key_lookups(year: dg.TimeWindowPartitionsDefinition, repeat: int = 2000) -> dict:
    now = dt.datetime.now(dt.UTC)
    keys = [minute_key(now - dt.timedelta(minutes=n)) for n in range(repeat)]
    out = {}
    started = time.perf_counter()
    for n in range(repeat):
        minute_key(now - dt.timedelta(minutes=n))
    out["minute_key_us"] = (time.perf_counter() - started) / repeat * 1e6
    started = time.perf_counter()
    for _ in range(repeat):
        minute_key(year.start)
    out["earliest_key_from_start_us"] = (time.perf_counter() - started) / repeat * 1e6
    started = time.perf_counter()
    for key in keys:
        is_known_minute(key, year)
    out["is_known_minute_us"] = (time.perf_counter() - started) / repeat * 1e6
    started = time.perf_counter()
    for key in keys[:200]:
        year.time_window_for_partition_key(key)
    out["dagster_time_window_for_partition_key_us"] = (time.perf_counter() - started) / 200 * 1e6
    started = time.perf_counter()
    for key in keys[:50]:
        year.has_partition_key(key)
    out["dagster_has_partition_key_us"] = (time.perf_counter() - started) / 50 * 1e6
    started = time.perf_counter()
    last = year.get_last_partition_key()
    out["dagster_get_last_partition_key_us"] = (time.perf_counter() - started) * 1e6
    out = {k: round(v, 2) for k, v in out.items()}
    out["last_partition_key"] = last
    return out


def fill_instance(instance: dg.DagsterInstance, runs: int, materializations: int) -> dict:
    """Past runs of the sensor (newest succeeded) and gold materializations, as a busy instance holds."""
    from dagster._core.storage.dagster_run import DagsterRun

    started = time.perf_counter()
    base = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=runs + 10)
    for n in range(runs):
        key = minute_key(base + dt.timedelta(minutes=n))
        instance.add_run(
            DagsterRun(
                job_name="minute_pipeline_job",
                run_id=str(uuid.uuid4()),
                status=dg.DagsterRunStatus.SUCCESS,
                tags={
                    "dagster/sensor_name": sensors.SENSOR_NAME,
                    "dagster/partition": key,
                    "dagster/run_key": key,
                },
            )
        )
    for _ in range(materializations):
        for name in GOLD_ASSETS:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=name, partition=None))
    return {"runs": runs, "gold_materializations": materializations * len(GOLD_ASSETS),
            "fill_s": round(time.perf_counter() - started, 1)}  # fmt: skip


def tick(instance: dg.DagsterInstance, kafka: KafkaResource, cursor: str | None) -> tuple[float, object]:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"kafka": kafka, "lag_sensor": LagSensorConfig()}
    )
    started = time.perf_counter()
    result = kafka_lag_sensor(context)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", default=None)
    parser.add_argument("--ticks", type=int, default=25)
    parser.add_argument("--symbols", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--closed-minutes", type=int, default=3)
    parser.add_argument("--step-ms", type=int, default=10_000, help="each symbol quotes every STEP ms")
    parser.add_argument("--runs", type=int, default=5000, help="past sensor runs in the instance")
    parser.add_argument("--materializations", type=int, default=300, help="per gold asset")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sensor_tick_"))
    year = build_minute_partitions(
        dt.datetime.combine(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=365), dt.time(), dt.UTC)
    )
    report: dict = {"partitions_defined_days": 365, "minutes_defined": 365 * 24 * 60 + 24 * 60}
    report["key_lookups"] = time_key_lookups(year)

    with broker(args.bootstrap_servers, work) as bootstrap:
        topic = create_topic(bootstrap, args.partitions, "sensor-tick")
        now_ms = int(time.time() * 1000)
        first_ms = now_ms - now_ms % 60_000 - args.closed_minutes * 60_000
        started = time.perf_counter()
        produced = produce_grid(
            bootstrap, topic, args.partitions, args.symbols, first_ms,
            seconds=(now_ms - first_ms) // 1000, step_ms=args.step_ms,
        )  # fmt: skip
        report["kafka"] = {"topic_partitions": args.partitions, "symbols": args.symbols, "records": produced,
                           "closed_minutes": args.closed_minutes, "produce_s": round(time.perf_counter() - started, 1)}  # fmt: skip
        kafka = KafkaResource(
            bootstrap_servers=bootstrap,
            topic=topic,
            ingest_group=f"tick-{topic}",
            require_log_append_time=False,
        )

        prepare_dagster_home(work / "dagster_home")  # the instance config `stock-platform run` writes
        with dg.DagsterInstance.from_config(str(work / "dagster_home")) as instance:
            report["instance"] = fill_instance(instance, args.runs, args.materializations)
            sensors.minute_partitions = year  # the sensor's earliest key now comes from a year back
            fresh, carried, requests, skip = [], [], [], None
            with EnumerationCounter() as counter:
                tick(instance, kafka, None)  # warm the client library and the instance's connection
                for _ in range(args.ticks):
                    seconds, result = tick(instance, kafka, None)
                    fresh.append(seconds)
                    requests.append(len(result.run_requests or []))
                cursor = None
                for _ in range(args.ticks):
                    seconds, result = tick(instance, kafka, cursor)
                    carried.append(seconds)
                    cursor = result.cursor
                    skip = result.skip_reason
            lag = sum(lag.lag for lag in kafka.consumer_lag())

    report["lag_records"] = lag
    report["ticks_fresh_cursor_s"] = summary(fresh)
    report["run_requests_per_fresh_tick"] = sorted(set(requests))
    report["ticks_carried_cursor_s"] = summary(carried)
    report["carried_cursor_last_skip_reason"] = str(skip)
    report["partition_enumerations_during_ticks"] = counter.calls
    worst = max(fresh + carried)
    report["target_s"] = TARGET_S
    report["meets_target"] = worst < TARGET_S and not any(counter.calls.values())
    emit(report, args.out)


if __name__ == "__main__":
    main()
