"""Orchestration's Definitions: the per-minute job, the lag sensor and the checks it evaluates.

The sensor's tuning comes from the environment here, at the wiring site (none of it is secret).
"""

import os

import dagster as dg

from stock_platform.orchestration.checks import consumer_lag_check, freshness_checks
from stock_platform.orchestration.jobs import minute_pipeline_job
from stock_platform.orchestration.sensors import LagSensorConfig, kafka_lag_sensor


def lag_sensor_config(env: dict[str, str]) -> LagSensorConfig:
    defaults = LagSensorConfig()
    return LagSensorConfig(
        lag_warn_threshold=int(env.get("LAG_WARN_THRESHOLD") or defaults.lag_warn_threshold),
        fresh_within_s=int(env.get("GOLD_FRESH_WITHIN_SECONDS") or defaults.fresh_within_s),
        batch_minutes=int(env.get("CATCH_UP_BATCH_MINUTES") or defaults.batch_minutes),
    )


defs = dg.Definitions(
    jobs=[minute_pipeline_job],
    sensors=[kafka_lag_sensor],
    asset_checks=[consumer_lag_check, *freshness_checks],
    resources={"lag_sensor": lag_sensor_config(dict(os.environ))},
)
