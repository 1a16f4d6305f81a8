"""Orchestration's Definitions: the per-minute job, the lag sensor and the checks it evaluates.

The sensor's and the checks' tuning comes from the settings here, at the wiring site (none of it is secret).
"""

import dagster as dg

from stock_platform.orchestration.checks import LagSensorConfig, consumer_lag_check, freshness_checks
from stock_platform.orchestration.jobs import gold_views_automation, minute_pipeline_job
from stock_platform.orchestration.sensors import kafka_lag_sensor
from stock_platform.settings import Settings, load_settings


def lag_sensor_config(settings: Settings) -> LagSensorConfig:
    return LagSensorConfig(
        lag_warn_threshold=settings.lag_warn_threshold,
        fresh_within_s=settings.gold_fresh_within_seconds,
        batch_minutes=settings.catch_up_batch_minutes,
    )


defs = dg.Definitions(
    jobs=[minute_pipeline_job],
    sensors=[kafka_lag_sensor, gold_views_automation],
    asset_checks=[consumer_lag_check, *freshness_checks],
    resources={"lag_sensor": lag_sensor_config(load_settings())},
)
