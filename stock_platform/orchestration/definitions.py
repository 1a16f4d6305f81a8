"""Orchestration's Definitions: the per-minute job, the dbt tests job, the lag sensor and the checks it
evaluates, and the hourly history purge.

Their tuning comes from the settings here, at the wiring site (none of it is secret).
"""

import dagster as dg

from stock_platform.orchestration.checks import LagSensorConfig, consumer_lag_check, freshness_checks
from stock_platform.orchestration.jobs import dbt_tests_job, gold_views_automation, minute_pipeline_job
from stock_platform.orchestration.purge import HistoryRetention, purge_history_job, purge_history_schedule
from stock_platform.orchestration.sensors import kafka_lag_sensor
from stock_platform.settings import Settings, load_settings


def lag_sensor_config(settings: Settings) -> LagSensorConfig:
    return LagSensorConfig(
        lag_warn_threshold=settings.lag_warn_threshold,
        fresh_within_s=settings.gold_fresh_within_seconds,
        batch_minutes=settings.catch_up_batch_minutes,
        tests_every_minutes=settings.dbt_tests_every_minutes,
    )


def history_retention(settings: Settings) -> HistoryRetention:
    return HistoryRetention(
        success_days=settings.history_success_days,
        failure_days=settings.history_failure_days,
        runless_days=settings.history_runless_days,
        webserver_url=settings.dagster_webserver_url,
    )


settings = load_settings()
defs = dg.Definitions(
    # Every job in-process, the asset jobs Dagster makes for the automation sensor's and the UI's runs too
    # (jobs.py says why): the default multiprocess executor starts a fresh Python per step, which imports
    # the code location again (~5 s and ~350 MiB), and the run's steps share one warehouse anyway.
    executor=dg.in_process_executor,
    jobs=[minute_pipeline_job, dbt_tests_job, purge_history_job],
    sensors=[kafka_lag_sensor, gold_views_automation],
    schedules=[purge_history_schedule],
    asset_checks=[consumer_lag_check, *freshness_checks],
    resources={"lag_sensor": lag_sensor_config(settings), "history": history_retention(settings)},
)
