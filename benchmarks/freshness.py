"""Quote-to-gold freshness of the real platform: broker + simulated producer + the real Dagster daemon.

Starts a local Kafka broker, the simulated producer (100 symbols at 1 quote/s each by default) and
``dagster-daemon run`` (``--dev``: ``dagster dev``) on a temporary DAGSTER_HOME written by
``prepare_dagster_home``, lets the lag sensor run the minutes for ``--minutes`` minutes, stops the
producer, waits for the last produced minute to reach gold, stops the daemon, then reads the Dagster
instance and the DuckDB warehouse (only after the daemon stopped: DuckDB locks the file) and prints:

- per-minute run wall time p50/p95: run start → end, and sensor request (run created) → end;
- minute close → gold updated (gold_kpi materialization of the minute) p50/p95;
- quote-to-gold freshness p50/p95: for every quote in the raw table, the end time of the run that put
  its minute into gold minus the quote's fetched_at;
- the daemon's own sensor tick durations.

Figures are given over all minutes and over the steady state: whole minutes of a live feed, i.e. the
producer ran from the minute's start to its close, which closed after the daemon's first run finished.
Left out are the daemon's start-up and the producer's first and last partial minutes; the last one is
closed by the grace period (no record follows it), which a live feed never waits for.

    .venv/bin/python benchmarks/freshness.py [--minutes 10] [--symbols 100] [--rate 100]

Targets (issue 14): run p95 <= 5 s; minute close -> gold p50 <= 8 s, p95 <= 15 s; quote -> gold p50
<= 40 s, p95 <= 60 s. Beside quote -> gold it prints the floor from the same quotes: quote -> its
minute's close.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import dagster as dg  # noqa: E402
from bench_common import (  # noqa: E402
    PROJECT_ROOT,
    DaemonPlatform,
    all_materializations,
    broker,
    connect_when_free,
    create_topic,
    emit,
    summary,
)

from stock_platform.partitions import minute_window  # noqa: E402

# Issue 14's targets.
TARGETS = {
    "run_wall_p95_s": 5.0,
    "minute_close_to_gold_p50_s": 8.0,
    "minute_close_to_gold_p95_s": 15.0,
    "quote_to_gold_p50_s": 40.0,
    "quote_to_gold_p95_s": 60.0,
}


def covered_minutes(run: dg.DagsterRun) -> list[str]:
    from stock_platform.partitions import minute_key

    single = run.tags.get("dagster/partition")
    if single:
        return [single]
    first = run.tags.get("dagster/asset_partition_range_start")
    last = run.tags.get("dagster/asset_partition_range_end")
    if not first or not last:
        return []
    keys, current = [], minute_window(first)[0]
    while current <= minute_window(last)[0]:
        keys.append(minute_key(current))
        current += dt.timedelta(minutes=1)
    return keys


def daemon_ticks(instance: dg.DagsterInstance) -> dict[str, list[float]]:
    """Durations of the lag sensor's ticks as the daemon recorded them: those that requested runs (a tick
    shortly before a minute's end waits for it, sensors.wait_for_close, so these include that wait) and
    the others."""
    durations: dict[str, list[float]] = {"requesting": [], "other": []}
    for state in instance.all_instigator_state():
        if state.instigator_name != "kafka_lag_sensor":
            continue
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=10_000):
            if tick.end_timestamp:
                kind = "requesting" if tick.run_ids else "other"
                durations[kind].append(tick.end_timestamp - tick.timestamp)
    return durations


def read_instance(platform: DaemonPlatform) -> dict:
    with platform.instance() as instance:
        records = instance.get_run_records(filters=dg.RunsFilter(job_name="minute_pipeline_job"))
        runs = []
        for record in records:
            run = record.dagster_run
            runs.append({
                "run_id": run.run_id, "status": run.status.value, "minutes": covered_minutes(run),
                "created": record.create_timestamp.timestamp(), "start": record.start_time,
                "end": record.end_time,
            })  # fmt: skip
        gold: dict[str, float] = {}
        for rec in all_materializations(instance, "gold_kpi"):
            key = rec.partition_key
            if key is not None:
                gold[key] = min(gold.get(key, rec.timestamp), rec.timestamp)
        ticks = daemon_ticks(instance)
    return {"runs": runs, "gold": gold, "ticks": ticks}


def quote_fetch_times(duckdb_path: Path) -> dict[str, list[float]]:
    """Every quote's fetched_at (epoch seconds), by the minute it was loaded into."""
    with connect_when_free(duckdb_path) as conn:
        rows = conn.execute(
            """
            select strftime(minute, '%Y-%m-%d-%H:%M') as minute_key,
                   list(cast(v->'quote'->>'fetched_at' as bigint)) as fetched
            from main.bronze_stock_quotes_raw group by 1
            """
        ).fetchall()
    return {key: [ms / 1000 for ms in fetched] for key, fetched in rows}


def analyse(data: dict, duckdb_path: Path, produced_from: float, produced_until: float) -> dict:
    ok = [r for r in data["runs"] if r["status"] == "SUCCESS" and r["start"] and r["end"]]
    failed = [r for r in data["runs"] if r["status"] == "FAILURE"]
    first_done = min((r["end"] for r in ok), default=None)
    minute_done: dict[str, float] = {}
    for r in sorted(ok, key=lambda r: r["end"], reverse=True):
        for key in r["minutes"]:
            minute_done[key] = r["end"]  # the earliest successful run wins
    fetched = quote_fetch_times(duckdb_path)

    def steady(key: str) -> bool:
        # Whole minutes of a live feed: the producer ran from the minute's start to its close (so the
        # minute closed on its records, not on the grace period the end of the feed leaves it), and the
        # daemon's start-up is over.
        opens, closes = (t.timestamp() for t in minute_window(key))
        return (
            first_done is not None
            and closes > first_done
            and produced_from <= opens
            and closes <= produced_until
        )

    def block(keys: list[str]) -> dict:
        run_keys = [r for r in ok if r["minutes"] and all(k in keys for k in r["minutes"])]
        quotes = [minute_done[k] - f for k in keys if k in minute_done for f in fetched.get(k, [])]
        # The floor, from the same quotes: the wait for their minute to close, which no run can shorten.
        floor = [
            minute_window(k)[1].timestamp() - f for k in keys if k in minute_done for f in fetched.get(k, [])
        ]
        close_to_gold = [
            data["gold"].get(k, minute_done[k]) - minute_window(k)[1].timestamp()
            for k in keys
            if k in minute_done
        ]
        return {
            "minutes": len(keys),
            "runs": len(run_keys),
            "run_start_to_end_s": summary([r["end"] - r["start"] for r in run_keys], 2),
            "run_requested_to_end_s": summary([r["end"] - r["created"] for r in run_keys], 2),
            "run_requested_to_start_s": summary([r["start"] - r["created"] for r in run_keys], 2),
            "minute_close_to_gold_s": summary(close_to_gold, 2),
            "quote_to_gold_s": summary(quotes, 2),
            "quote_to_minute_close_s": summary(floor, 2),
            "quotes": len(quotes),
        }

    keys = sorted(minute_done)
    return {
        "runs_succeeded": len(ok),
        "runs_failed": len(failed),
        "range_runs": sum(1 for r in ok if len(r["minutes"]) > 1),
        "all_minutes": block(keys),
        "steady_state": block([k for k in keys if steady(k)]),
        "daemon_sensor_tick_s": summary(data["ticks"]["other"], 3),
        "daemon_sensor_tick_requesting_runs_s": summary(data["ticks"]["requesting"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the producer runs")
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--rate", type=float, default=100.0, help="quotes per second in all")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--dev", action="store_true", help="run `dagster dev` instead of dagster-daemon")
    parser.add_argument("--bootstrap-servers", default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="freshness_"))
    work.mkdir(parents=True, exist_ok=True)
    with broker(args.bootstrap_servers, work) as bootstrap:
        topic = create_topic(bootstrap, args.partitions, "freshness", append_time=True)
        platform = DaemonPlatform(work, bootstrap, topic, dev=args.dev).start()
        producer_log = open(work / "producer.log", "wb")  # noqa: SIM115
        producer = subprocess.Popen(
            [sys.executable, "-m", "stock_platform.cli", "produce", "--source", "simulated",
             "--symbol-count", str(args.symbols), "--rate", str(args.rate),
             "--bootstrap-servers", bootstrap, "--topic", topic, "--duration", str(args.minutes * 60)],
            cwd=PROJECT_ROOT, env=platform.env(), stdout=producer_log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        produced_from = time.time()
        try:
            deadline = time.time() + args.minutes * 60 + 60
            while producer.poll() is None and time.time() < deadline:
                if not platform.alive():
                    raise SystemExit(f"the daemon exited; see {platform.log_path}")
                time.sleep(2)
            producer_stopped = time.time()
            # Wait until every minute the producer wrote is in gold: the last minute closes after its
            # grace period, then its run takes a few seconds.
            with platform.instance() as instance:
                from stock_platform.partitions import minute_key

                last_key = minute_key(dt.datetime.fromtimestamp(producer_stopped - 1, dt.UTC))
                wait_until = time.time() + 180
                while time.time() < wait_until:
                    done = [
                        r for r in instance.get_runs(
                            filters=dg.RunsFilter(job_name="minute_pipeline_job",
                                                  statuses=[dg.DagsterRunStatus.SUCCESS]), limit=50)
                        if max(covered_minutes(r), default="") >= last_key
                    ]  # fmt: skip
                    if done:
                        break
                    time.sleep(2)
        finally:
            if producer.poll() is None:
                from stock_platform.services.process import stop_process

                stop_process(producer.pid)
            producer_log.close()
            platform.stop()
        data = read_instance(platform)

    report = {
        "symbols": args.symbols,
        "quotes_per_s": args.rate,
        "producer_minutes": args.minutes,
        "runner": "dagster dev" if args.dev else "dagster-daemon run",
        "workdir": str(work),
        # The producer's own timer starts after this script's clock: its planned end is a lower bound.
        **analyse(
            data,
            platform.duckdb_path,
            produced_from,
            min(producer_stopped, produced_from + args.minutes * 60),
        ),
    }
    steady = report["steady_state"]
    report["targets"] = TARGETS
    figure = {
        "run_wall_p95_s": steady["run_start_to_end_s"]["p95"],
        "minute_close_to_gold_p50_s": steady["minute_close_to_gold_s"]["p50"],
        "minute_close_to_gold_p95_s": steady["minute_close_to_gold_s"]["p95"],
        "quote_to_gold_p50_s": steady["quote_to_gold_s"]["p50"],
        "quote_to_gold_p95_s": steady["quote_to_gold_s"]["p95"],
    }
    report["meets_targets"] = {name: (figure[name] or 1e9) <= target for name, target in TARGETS.items()}
    emit(report, args.out)


if __name__ == "__main__":
    main()
