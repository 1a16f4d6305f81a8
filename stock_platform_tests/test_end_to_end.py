"""End to end with the real Dagster daemon: quotes produced now reach the raw table, silver and gold with
nobody clicking anything, each exactly once, and gold equals figures computed here from the input."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from stock_platform.partitions import minute_key_from_ms
from stock_platform.quotes import encode_record
from stock_platform.services.paths import PROJECT_ROOT
from stock_platform.services.process import log_tail, stop_process
from stock_platform_tests.ingestion.conftest import produce
from stock_platform_tests.isolated_platform import isolated_platform_env

pytestmark = pytest.mark.integration

SYMBOLS = ("AAPL", "AMZN", "GOOGL", "MSFT", "TSLA")
RUN_ID = f"e2e-{uuid.uuid4().hex[:8]}"


def stream(start_ms: int, count: int) -> list[dict]:
    """Sequenced quotes, a symbol each 250 ms (so each symbol's quote times differ by over a second)."""
    records = []
    for seq in range(count):
        fetched_at = start_ms + seq * 250
        symbol = SYMBOLS[seq % len(SYMBOLS)]
        price = 100.0 + 10 * (seq % len(SYMBOLS)) + seq / 100
        records.append({
            "schema_version": 1, "symbol": symbol, "c": price, "d": price - 99.0, "dp": (price - 99.0) / 0.99,
            "h": price + 2, "l": price - 2, "o": price - 1, "pc": 99.0, "t": fetched_at // 1000,
            "fetched_at": fetched_at, "source": "replay", "producer_run_id": RUN_ID, "seq": seq,
        })  # fmt: skip
    return records


def expected_kpi(records: list[dict]) -> dict[str, tuple]:
    """Latest quote per symbol (newest quote time, then newest fetch), computed without the warehouse."""
    latest: dict[str, dict] = {}
    for r in records:
        best = latest.get(r["symbol"])
        if best is None or (r["t"], r["fetched_at"]) > (best["t"], best["fetched_at"]):
            latest[r["symbol"]] = r
    return {
        s: (r["c"], r["h"], r["l"], dt.datetime.fromtimestamp(r["t"], dt.UTC).replace(tzinfo=None))
        for s, r in latest.items()
    }


def wait_for_minute(
    instance: dg.DagsterInstance, minute: str, daemon: subprocess.Popen, log, timeout_s: float
):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert daemon.poll() is None, f"the daemon exited:\n{log_tail(log, 60)}"
        for run in instance.get_runs(filters=dg.RunsFilter(job_name="minute_pipeline_job"), limit=20):
            covered = run.tags.get("dagster/partition") or run.tags.get("dagster/asset_partition_range_end")
            if run.status == dg.DagsterRunStatus.FAILURE:
                pytest.fail(f"run {run.run_id} for {covered} failed:\n{log_tail(log, 80)}")
            if run.status == dg.DagsterRunStatus.SUCCESS and covered is not None and covered >= minute:
                return
        time.sleep(2)
    pytest.fail(f"no successful run reached minute {minute} in {timeout_s:.0f} s:\n{log_tail(log, 80)}")


def test_quotes_produced_now_reach_silver_and_gold_exactly_once_through_the_daemon(kafka_broker, tmp_path):
    env = isolated_platform_env(kafka_broker.bootstrap_servers, tmp_path, partitions=2, prefix="e2e")
    topic, dagster_home = env["KAFKA_TOPIC"], Path(env["DAGSTER_HOME"])
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        records = stream(int(time.time() * 1000), 40)
        produce(
            kafka_broker.bootstrap_servers,
            topic,
            [(r["seq"] % 2, r["fetched_at"], encode_record(r)) for r in records],
        )
        last_minute = minute_key_from_ms(records[-1]["fetched_at"])
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            wait_for_minute(instance, last_minute, daemon, log, timeout_s=240)
    finally:
        stop_process(daemon.pid)

    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        raw = conn.execute(
            "select count(*), count(distinct (kafka_partition, kafka_offset)) from main.bronze_stock_quotes_raw"
        ).fetchone()
        assert raw == (40, 40)
        silver = conn.execute("select record_id from silver.silver_quotes").fetchall()
        assert sorted(r[0] for r in silver) == sorted(f"{RUN_ID}:{seq}" for seq in range(40))
        kpi = conn.execute("select symbol, price, day_high, day_low, as_of from gold.gold_kpi").fetchall()
    assert {s: (p, h, lo, t) for s, p, h, lo, t in kpi} == expected_kpi(records)
