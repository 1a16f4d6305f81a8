"""Real-path history soak: the platform under the real daemon for an hour with a short retention, purged
every few minutes; the instance must stop growing.

The real lag sensor, minute runs, dbt tests runs and views build write the history; this script applies
``purge_history`` (stock_platform/orchestration/purge.py) every ``--purge-every`` minutes with a retention
of ``--retention-minutes`` for every kind of history, and samples the instance folder's size. The
unpurged growth rate is measured before anything can expire (from ``--warmup`` minutes to the retention);
the pass figure is the growth after ``--steady-after`` minutes as a share of what the same time would
have added unpurged (issue 12: at most 5 %). It also prints the per-run event budget as written.

    .venv/bin/python benchmarks/history_real_soak.py --minutes 60
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import dagster as dg  # noqa: E402
from bench_common import PROJECT_ROOT, DaemonPlatform, broker, create_topic, emit  # noqa: E402

from stock_platform.orchestration.purge import RetentionPolicy, purge_history  # noqa: E402

GROWTH_SHARE_TARGET = 0.05


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def event_budget(instance: dg.DagsterInstance) -> dict[str, float]:
    """Events and bytes per successful minute run, and runless events per minute, as stored."""
    from dagster._core.storage.event_log.schema import SqlEventLogStorageTable  # noqa: PLC0415
    from sqlalchemy import func, select  # noqa: PLC0415

    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name="minute_pipeline_job", statuses=[dg.DagsterRunStatus.SUCCESS]),
        limit=20,
    )
    counts, sizes = [], []
    storage = instance.event_log_storage
    for run in runs:
        with storage.run_connection(run.run_id) as conn:  # type: ignore[attr-defined]
            n, size = conn.execute(
                select(func.count(), func.sum(func.length(SqlEventLogStorageTable.c.event))).where(
                    SqlEventLogStorageTable.c.run_id == run.run_id
                )
            ).one()
        counts.append(n)
        sizes.append(size or 0)
    with storage.run_connection("") as conn:  # type: ignore[attr-defined]
        first, last, runless = conn.execute(
            select(
                func.min(SqlEventLogStorageTable.c.timestamp),
                func.max(SqlEventLogStorageTable.c.timestamp),
                func.count(),
            ).where(SqlEventLogStorageTable.c.run_id == "")
        ).one()
    minutes = max(1.0, (last - first).total_seconds() / 60) if first and last else 1.0
    return {
        "events_per_minute_run": round(sum(counts) / len(counts), 1) if counts else 0.0,
        "event_bytes_per_minute_run": round(sum(sizes) / len(sizes)) if sizes else 0,
        "runless_events_per_minute_kept": round(runless / minutes, 2),
        "runs_sampled": len(counts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--retention-minutes", type=float, default=10.0)
    parser.add_argument("--purge-every", type=float, default=2.0, help="minutes between purges")
    parser.add_argument("--warmup", type=float, default=3.0, help="minutes before the rate is measured")
    parser.add_argument("--steady-after", type=float, default=20.0)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="history_soak_"))
    work.mkdir(parents=True, exist_ok=True)
    days = args.retention_minutes / 1440
    policy = RetentionPolicy(success_days=days, failure_days=days, runless_days=days)
    samples: list[tuple[float, int]] = []
    purges: list[dict] = []
    load_start = os.getloadavg()
    with broker(None, work) as bootstrap:
        topic = create_topic(bootstrap, 6, "soak", append_time=True)
        platform = DaemonPlatform(work, bootstrap, topic, extra_env={"DBT_TESTS_EVERY_MINUTES": "5"})
        platform.start()
        producer_log = open(work / "producer.log", "wb")  # noqa: SIM115
        producer = subprocess.Popen(
            [sys.executable, "-m", "stock_platform.cli", "produce", "--source", "simulated",
             "--symbol-count", str(args.symbols), "--rate", str(args.rate),
             "--bootstrap-servers", bootstrap, "--topic", topic, "--duration", str(args.minutes * 60 + 60)],
            cwd=PROJECT_ROOT, env=platform.env(), stdout=producer_log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        started = time.time()
        next_purge = started + args.purge_every * 60
        try:
            with platform.instance() as instance:
                while (elapsed := time.time() - started) < args.minutes * 60:
                    if not platform.alive():
                        raise SystemExit(f"the daemon exited; see {platform.log_path}")
                    samples.append((elapsed / 60, folder_bytes(platform.dagster_home)))
                    if time.time() >= next_purge:
                        report = purge_history(instance, policy, instance.get_asset_keys())
                        purges.append({"at_min": round(elapsed / 60, 1), **report.as_metadata()})
                        next_purge += args.purge_every * 60
                    time.sleep(20)
                samples.append(((time.time() - started) / 60, folder_bytes(platform.dagster_home)))
                budget = event_budget(instance)
                minute_runs = len(instance.get_run_ids(filters=dg.RunsFilter(job_name="minute_pipeline_job")))
        finally:
            from stock_platform.services.process import stop_process  # noqa: PLC0415

            if producer.poll() is None:
                stop_process(producer.pid)
            producer_log.close()
            platform.stop()

    def size_at(minute: float) -> tuple[float, int]:
        return min(samples, key=lambda s: abs(s[0] - minute))

    (w_min, w_bytes), (r_min, r_bytes) = size_at(args.warmup), size_at(args.retention_minutes)
    unpurged_rate = (r_bytes - w_bytes) / max(r_min - w_min, 1e-9)  # bytes per minute, nothing expired yet
    (s_min, s_bytes), (e_min, e_bytes) = size_at(args.steady_after), samples[-1]
    growth = e_bytes - s_bytes
    unpurged = unpurged_rate * (e_min - s_min)
    share = growth / unpurged if unpurged > 0 else float("inf")
    emit(
        {
            "benchmark": "history_real_soak",
            "minutes": args.minutes,
            "retention_minutes": args.retention_minutes,
            "load_avg_start": [round(x, 2) for x in load_start],
            "load_avg_end": [round(x, 2) for x in os.getloadavg()],
            "unpurged_growth_kib_per_min": round(unpurged_rate / 1024, 1),
            "size_mib": {f"{m:.0f}": round(b / 2**20, 2) for m, b in samples[:: max(1, len(samples) // 20)]},
            "growth_after_steady_kib": round(growth / 1024, 1),
            "unpurged_growth_same_time_kib": round(unpurged / 1024, 1),
            "growth_share": round(share, 4),
            "target_share": GROWTH_SHARE_TARGET,
            "pass": share <= GROWTH_SHARE_TARGET,
            "minute_runs_left": minute_runs,
            "purges": purges[-5:],
            "purge_runs_per_s_min": min((p["runs_per_s"] for p in purges if p["runs"]), default=None),
            **budget,
            "workdir": str(work),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
