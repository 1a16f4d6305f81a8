"""The whole code location loads, and its asset graph reads Kafka → raw object → raw table → silver → gold."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pytest

from stock_platform.definitions import defs
from stock_platform.services.paths import PROJECT_ROOT

LINEAGE = [
    ("stock_quotes_topic", "kafka_quote_batch"),
    ("kafka_quote_batch", "raw_quote_object"),
    ("raw_quote_object", "raw_quote_table"),
    ("raw_quote_table", "silver_quotes"),
    ("silver_quotes", "gold_kpi"),
    ("silver_quotes", "gold_candlestick"),
    ("silver_quotes", "gold_treechart"),
]


def test_asset_graph_has_unbroken_lineage_from_kafka_to_gold():
    graph = defs.resolve_asset_graph()
    for upstream, downstream in LINEAGE:
        parents = graph.get(dg.AssetKey(downstream)).parent_keys
        assert dg.AssetKey(upstream) in parents, f"{downstream} should read {upstream}; it reads {parents}"


def test_groups_are_layers():
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups["kafka_quote_batch"] == "ingestion"
    assert groups["raw_quote_object"] == groups["raw_quote_table"] == "bronze"
    assert groups["silver_quotes"] == "silver"
    assert groups["gold_kpi"] == groups["gold_candlestick"] == groups["gold_treechart"] == "gold"


@pytest.mark.slow  # a `dagster` CLI subprocess loads the code location: tens of seconds
def test_dagster_cli_validates_the_workspace():
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


def test_the_lag_sensor_runs_the_minute_pipeline_job_and_the_dbt_tests_by_default():
    sensor = defs.resolve_sensor_def("kafka_lag_sensor")
    assert {job.name for job in sensor.jobs} == {"minute_pipeline_job", "dbt_tests_job"}
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    # Below Dagster's 5 s sensor loop, so every loop ticks (sensors.py).
    assert sensor.minimum_interval_seconds == 4
    job = defs.resolve_job_def("minute_pipeline_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {
        "kafka_quote_batch", "raw_quote_object", "raw_quote_table", "silver_quotes", "silver_rejected_quotes",
        "gold_kpi", "gold_candlestick",
    }  # fmt: skip


def test_the_history_purge_runs_hourly_by_default_with_the_settings_retention():
    schedule = defs.resolve_schedule_def("purge_history_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == "17 * * * *" and schedule.job_name == "purge_history_job"
    retention = defs.resources["history"]  # type: ignore[index]
    assert (retention.success_days, retention.failure_days, retention.runless_days) == (3, 7, 1)
