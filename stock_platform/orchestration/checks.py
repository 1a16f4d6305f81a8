"""Checks the lag sensor evaluates every tick (and a user can run from the UI): consumer lag on the
topic, and gold freshness while quotes are flowing."""

import time

import dagster as dg

from stock_platform.resources.kafka import KafkaResource
from stock_platform.settings import Settings

# The gold tables the minute runs update; gold_treechart is a view over silver, current without a run.
GOLD_ASSETS = ("gold_kpi", "gold_candlestick")
LAG_CHECK = "consumer_lag_within_threshold"
FRESHNESS_CHECK = "fresh_while_quotes_flow"


def _default(name: str) -> int:
    default: int = Settings.model_fields[name].default
    return default


class LagSensorConfig(dg.ConfigurableResource):
    """Tuning of the lag sensor and of the checks it evaluates, so an operator can change it without code.

    The checks read it too, so a check run from the UI judges by the same thresholds as the sensor's ticks.
    The orchestration Definitions set it from LAG_WARN_THRESHOLD, GOLD_FRESH_WITHIN_SECONDS and
    CATCH_UP_BATCH_MINUTES and DBT_TESTS_EVERY_MINUTES; the defaults here are those variables' defaults.
    """

    lag_warn_threshold: int = _default("lag_warn_threshold")
    fresh_within_s: int = _default("gold_fresh_within_seconds")
    batch_minutes: int = _default("catch_up_batch_minutes")
    tests_every_minutes: int = _default("dbt_tests_every_minutes")
    max_runs_per_tick: int = 4
    retry_after_s: float = 30.0


def lag_evaluation(total_lag: int, threshold: int) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey("stock_quotes_topic"),
        check_name=LAG_CHECK,
        passed=total_lag <= threshold,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"total_lag": total_lag, "threshold": threshold},
        description=f"ingest group lag {total_lag} records (warn above {threshold})",
    )


def freshness_evaluations(
    instance: dg.DagsterInstance, now_ms: int, records_recently: bool, fresh_within_s: int
) -> list[dg.AssetCheckEvaluation]:
    """Gold is stale when quotes arrived within ``fresh_within_s`` but gold was not updated within it.

    When nothing arrives (market closed, producer stopped) an old gold table is expected, not stale.
    """
    evaluations = []
    for name in GOLD_ASSETS:
        event = instance.get_latest_materialization_event(dg.AssetKey(name))
        age_s = None if event is None else max(0.0, now_ms / 1000 - event.timestamp)
        stale = records_recently and (age_s is None or age_s > fresh_within_s)
        evaluations.append(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(name),
                check_name=FRESHNESS_CHECK,
                passed=not stale,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "age_s": dg.MetadataValue.float(age_s if age_s is not None else -1.0),
                    "quotes_flowing": records_recently,
                    "fresh_within_s": fresh_within_s,
                },
            )
        )
    return evaluations


@dg.asset_check(asset="stock_quotes_topic", name=LAG_CHECK, description="Warns when the ingest group lags.")
def consumer_lag_check(kafka: KafkaResource, lag_sensor: LagSensorConfig) -> dg.AssetCheckResult:
    total = sum(lag.lag for lag in kafka.consumer_lag())
    evaluation = lag_evaluation(total, lag_sensor.lag_warn_threshold)
    return dg.AssetCheckResult(
        passed=evaluation.passed, severity=evaluation.severity, metadata=evaluation.metadata
    )


def _freshness_check(name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=name,
        name=FRESHNESS_CHECK,
        description=f"Warns when quotes flow but {name} was not updated for GOLD_FRESH_WITHIN_SECONDS.",
    )
    def check(
        context: dg.AssetCheckExecutionContext, kafka: KafkaResource, lag_sensor: LagSensorConfig
    ) -> dg.AssetCheckResult:
        now_ms = int(time.time() * 1000)
        fresh_within_s = lag_sensor.fresh_within_s
        recent = kafka.snapshot(now_ms, recent_ms=fresh_within_s * 1000).records_recently
        evaluation = next(
            e for e in freshness_evaluations(context.instance, now_ms, recent, fresh_within_s)
            if e.asset_key == dg.AssetKey(name)
        )  # fmt: skip
        return dg.AssetCheckResult(
            passed=evaluation.passed, severity=evaluation.severity, metadata=evaluation.metadata
        )

    return check


freshness_checks = [_freshness_check(name) for name in GOLD_ASSETS]
