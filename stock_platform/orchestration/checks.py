"""Checks the lag sensor evaluates every tick (and a user can run from the UI): consumer lag on the
topic, and gold freshness while quotes are flowing."""

import time

import dagster as dg

from stock_platform.resources.kafka import KafkaResource

GOLD_ASSETS = ("gold_kpi", "gold_candlestick", "gold_treechart")
LAG_CHECK = "consumer_lag_within_threshold"
FRESHNESS_CHECK = "fresh_while_quotes_flow"
DEFAULT_LAG_THRESHOLD = 10_000
DEFAULT_FRESH_WITHIN_S = 180


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
def consumer_lag_check(kafka: KafkaResource) -> dg.AssetCheckResult:
    total = sum(lag.lag for lag in kafka.consumer_lag())
    evaluation = lag_evaluation(total, DEFAULT_LAG_THRESHOLD)
    return dg.AssetCheckResult(
        passed=evaluation.passed, severity=evaluation.severity, metadata=evaluation.metadata
    )


def _freshness_check(name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=name,
        name=FRESHNESS_CHECK,
        description=f"Warns when quotes flow but {name} was not updated for {DEFAULT_FRESH_WITHIN_S} s.",
    )
    def check(context: dg.AssetCheckExecutionContext, kafka: KafkaResource) -> dg.AssetCheckResult:
        now_ms = int(time.time() * 1000)
        recent = kafka.snapshot(now_ms, recent_ms=DEFAULT_FRESH_WITHIN_S * 1000).records_recently
        evaluation = next(
            e for e in freshness_evaluations(context.instance, now_ms, recent, DEFAULT_FRESH_WITHIN_S)
            if e.asset_key == dg.AssetKey(name)
        )  # fmt: skip
        return dg.AssetCheckResult(
            passed=evaluation.passed, severity=evaluation.severity, metadata=evaluation.metadata
        )

    return check


freshness_checks = [_freshness_check(name) for name in GOLD_ASSETS]
