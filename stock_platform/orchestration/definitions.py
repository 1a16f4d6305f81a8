"""Orchestration's Definitions: the per-minute job, the lag sensor and the checks it evaluates."""

import dagster as dg

from stock_platform.orchestration.checks import consumer_lag_check, freshness_checks
from stock_platform.orchestration.jobs import minute_pipeline_job
from stock_platform.orchestration.sensors import LagSensorConfig, kafka_lag_sensor

defs = dg.Definitions(
    jobs=[minute_pipeline_job],
    sensors=[kafka_lag_sensor],
    asset_checks=[consumer_lag_check, *freshness_checks],
    resources={"lag_sensor": LagSensorConfig()},
)
