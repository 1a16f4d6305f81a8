"""Catch-up of 24 hours of history through the real daemon, the lag sensor and its range runs.

Writes ``--hours`` of history (100 symbols x 1 quote/s = 8,640,000 quotes for 24 h, Kafka timestamps
over the hours ending ``--ends-ago-min`` minutes ago, several partitions) into a fresh topic with
confluent_kafka directly, then, for each ``--batch-minutes`` value (env CATCH_UP_BATCH_MINUTES of the
sensor) and each ``--launch`` (``dagster dev``, as ``stock-platform run`` starts the platform, or
``dagster-daemon run`` alone), starts it on a fresh temporary instance, warehouse, lake and ingest group
and measures:

- wall time until the ingest group has committed every record and the last run succeeded (from the
  daemon's start, and from the first run's creation);
- peak memory, sampling every process of the tree every 0.5 s from /proc: the largest single process's
  RSS, the sum of RSS (pages a forked run worker shares with its warm host counted twice) and the sum of
  PSS (shared pages counted once), with the processes that made up the peak PSS sum;
- the runs: how many, their partition range tags, and how many partitions each materialized per asset
  (does Dagster cap a sensor-requested range at the assets' BackfillPolicy.multi_run(60)? no if a
  240-minute run materializes 240 partitions);
- rows in the raw table and silver.

    .venv/bin/python benchmarks/catch_up.py [--hours 24] [--batch-minutes 240,360] [--launch dev,daemon]

Targets (issue 14): <= 150 s from the daemon's start, peak tree RSS < 1.5 GiB.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import dagster as dg  # noqa: E402
from bench_common import (  # noqa: E402
    DaemonPlatform,
    TreeRssSampler,
    all_materializations,
    broker,
    committed_lag,
    connect_when_free,
    create_topic,
    emit,
    produce_grid,
    summary,
)

from stock_platform.settings import Settings  # noqa: E402

# Issue 14's targets: 24 h caught up within 150 s of the daemon's start, peak tree under 1.5 GiB.
TARGET_WALL_S = 150.0
TARGET_RSS_MIB = 1536.0
IN_FLIGHT = {
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING,
}  # fmt: skip


def run_summary(platform: DaemonPlatform) -> dict:
    with platform.instance() as instance:
        records = instance.get_run_records(filters=dg.RunsFilter(job_name="minute_pipeline_job"))
        per_asset: dict[str, collections.Counter] = {}
        for name in ("kafka_quote_batch", "raw_quote_table", "silver_quotes", "gold_kpi"):
            counter: collections.Counter = collections.Counter()
            for rec in all_materializations(instance, name):
                counter[rec.run_id] += 1
            per_asset[name] = counter
        steps = {
            record.dagster_run.run_id: step_seconds(instance, record.dagster_run.run_id) for record in records
        }
    runs = []
    for record in sorted(records, key=lambda r: r.create_timestamp):
        run = record.dagster_run
        first = run.tags.get("dagster/asset_partition_range_start") or run.tags.get("dagster/partition")
        last = run.tags.get("dagster/asset_partition_range_end") or run.tags.get("dagster/partition")
        from stock_platform.orchestration.planning import minutes_between

        runs.append({
            "run_key": run.tags.get("dagster/run_key"),
            "range": [first, last],
            "minutes_in_tags": minutes_between(first, last) if first and last else None,
            "status": run.status.value,
            "seconds": round(record.end_time - record.start_time, 1) if record.end_time and record.start_time else None,
            "created_to_start_s": round(record.start_time - record.create_timestamp.timestamp(), 1) if record.start_time else None,
            "step_seconds": steps[run.run_id],
            "partitions_materialized": {name: c[run.run_id] for name, c in per_asset.items()},
        })  # fmt: skip
    return {"runs": runs}


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Each step's duration in a run, from its STEP_START and STEP_SUCCESS / STEP_FAILURE events."""
    kinds = {
        dg.DagsterEventType.STEP_START,
        dg.DagsterEventType.STEP_SUCCESS,
        dg.DagsterEventType.STEP_FAILURE,
    }
    started: dict[str, float] = {}
    durations: dict[str, float] = {}
    for entry in instance.all_logs(run_id, of_type=kinds):
        key = entry.step_key or ""
        if entry.dagster_event_type == dg.DagsterEventType.STEP_START:
            started[key] = entry.timestamp
        elif key in started:
            durations[key] = round(entry.timestamp - started[key], 1)
    return durations


def trial(
    bootstrap: str, topic: str, batch: int, total: int, timeout_s: float, root: Path, launch: str
) -> dict:
    work = root / f"batch_{batch}_{launch}"
    work.mkdir(parents=True, exist_ok=True)
    # Each trial starts from nothing: its own ingest group (so the whole history is lag), instance,
    # lake and warehouse.
    group = f"ingest-{topic}-batch{batch}-{launch}"
    platform = DaemonPlatform(
        work,
        bootstrap,
        topic,
        # The history arrives over time: 24 h of CreateTime stamps stand for 24 h of arrival minutes,
        # which a LogAppendTime topic cannot be given after the fact (it would be one burst of a few
        # minutes, not the backlog a platform down for a day has to catch up on).
        extra_env={
            "CATCH_UP_BATCH_MINUTES": str(batch),
            "KAFKA_INGEST_GROUP": group,
            "KAFKA_REQUIRE_LOG_APPEND_TIME": "false",
        },
        dev=launch == "dev",
    )
    started = time.time()
    platform.start()
    assert platform.process is not None
    finished = None
    first_created = None
    last_lag = total
    with TreeRssSampler(*platform.root_pids()) as sampler:
        try:
            with platform.instance() as instance:
                while time.time() - started < timeout_s:
                    if not platform.alive():
                        raise SystemExit(f"the daemon exited; see {platform.log_path}")
                    runs = instance.get_runs(filters=dg.RunsFilter(job_name="minute_pipeline_job"), limit=1)
                    if runs and first_created is None:
                        oldest = instance.get_run_records(
                            filters=dg.RunsFilter(job_name="minute_pipeline_job"), limit=1, ascending=True
                        )
                        first_created = oldest[0].create_timestamp.timestamp()
                    # A busy broker may not answer in time; ask again at the next poll.
                    with contextlib.suppress(Exception):
                        last_lag = committed_lag(bootstrap, topic, group)
                    if (
                        last_lag == 0
                        and runs
                        and runs[0].status == dg.DagsterRunStatus.SUCCESS
                        and not instance.get_run_ids(filters=dg.RunsFilter(statuses=list(IN_FLIGHT)))
                    ):
                        finished = time.time()
                        break
                    time.sleep(2)
        finally:
            platform.stop()
    result: dict = {
        "batch_minutes": batch,
        "launch": launch,
        "completed": finished is not None,
        "wall_s_from_daemon_start": round((finished or time.time()) - started, 1),
        "wall_s_from_first_run_created": round((finished or time.time()) - first_created, 1)
        if first_created
        else None,
        "lag_left": last_lag,
        **sampler.report(),
        **run_summary(platform),
    }
    runs = result["runs"]
    result["run_count"] = len(runs)
    result["run_seconds"] = summary([r["seconds"] for r in runs if r["seconds"] is not None], 1)
    result["created_to_start_seconds"] = summary(
        [r["created_to_start_s"] for r in runs if r["created_to_start_s"] is not None], 1
    )
    step_keys = sorted({key for r in runs for key in r["step_seconds"]})
    result["step_seconds"] = {
        key: summary([r["step_seconds"][key] for r in runs if key in r["step_seconds"]], 1)
        for key in step_keys
    }
    result["max_minutes_in_one_run"] = max((r["minutes_in_tags"] or 0 for r in runs), default=0)
    result["max_partitions_materialized_in_one_run"] = max(
        (r["partitions_materialized"]["raw_quote_table"] for r in runs), default=0
    )
    if platform.duckdb_path.exists():
        with connect_when_free(platform.duckdb_path) as conn:
            result["raw_rows"] = conn.execute("select count(*) from main.bronze_stock_quotes_raw").fetchone()[
                0
            ]
            result["silver_rows"] = conn.execute("select count(*) from silver.silver_quotes").fetchone()[0]
    result["meets_targets"] = {
        "wall": finished is not None and result["wall_s_from_daemon_start"] <= TARGET_WALL_S,
        "rss": result["peak_tree_sum_rss_mib"] < TARGET_RSS_MIB,
        # The tree's memory with a forked worker's pages shared with its host counted once.
        "pss": result["peak_tree_sum_pss_mib"] < TARGET_RSS_MIB,
    }
    (work / "trial.json").write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--ends-ago-min", type=int, default=15)
    parser.add_argument(
        "--batch-minutes",
        default=str(Settings.model_fields["catch_up_batch_minutes"].default),
        help="comma-separated trials (default: the platform's own CATCH_UP_BATCH_MINUTES default)",
    )
    parser.add_argument("--timeout-min", type=float, default=15.0, help="per trial")
    parser.add_argument(
        "--launch",
        default="dev",
        help="comma-separated trials: `dev` runs `dagster dev` as `stock-platform run` does (one code server, "
        "shared by the daemon and the webserver); `daemon` runs `dagster-daemon run -w workspace.yaml` alone, "
        "which spawns its own code server and replaces it every 60 s",
    )
    parser.add_argument("--bootstrap-servers", default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    root = args.workdir or Path(tempfile.mkdtemp(prefix="catch_up_"))
    root.mkdir(parents=True, exist_ok=True)
    report: dict = {"hours": args.hours, "symbols": args.symbols, "topic_partitions": args.partitions}
    with broker(args.bootstrap_servers, root) as bootstrap:
        topic = create_topic(bootstrap, args.partitions, "catch-up")
        seconds = int(args.hours * 3600)
        now_ms = int(time.time() * 1000)
        first_ms = now_ms - now_ms % 60_000 - args.ends_ago_min * 60_000 - seconds * 1000
        started = time.perf_counter()
        total = produce_grid(
            bootstrap, topic, args.partitions, args.symbols, first_ms, seconds, progress=True
        )
        produce_s = time.perf_counter() - started
        report["quotes"] = total
        report["produce_s"] = round(produce_s, 1)
        report["produce_rate_per_s"] = round(total / produce_s)
        report["trials"] = []
        for batch in [int(b) for b in args.batch_minutes.split(",") if b]:
            for launch in [x for x in args.launch.split(",") if x]:
                if launch not in ("dev", "daemon"):
                    raise SystemExit(f"--launch takes dev and/or daemon, not {launch!r}")
                print(
                    f"catch-up trial with CATCH_UP_BATCH_MINUTES={batch} under {launch} ...",
                    flush=True,
                    file=sys.stderr,
                )
                report["trials"].append(
                    trial(bootstrap, topic, batch, total, args.timeout_min * 60, root, launch)
                )
    report["targets"] = {"wall_s": TARGET_WALL_S, "peak_rss_mib": TARGET_RSS_MIB}
    emit(report, args.out)


if __name__ == "__main__":
    main()
