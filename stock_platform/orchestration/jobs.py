"""The per-minute job: a minute's Kafka batch, raw object, raw table and the dbt models, in one run.

The dbt views (gold_treechart) are not in it: a view is current without a run, and it is created when
missing or changed by its automation condition (stock_platform/transform/assets.py).

In-process executor: the run's fixed cost (process start, loading the code location) is paid once and
the steps share it, which is what keeps a whole per-minute run within seconds. The run queue lets one
ingestion run execute at a time (tag ``stock_platform/ingest``), in the order the sensor requested them,
so minutes are committed in order.
"""

import dagster as dg
from dagster._core.storage.tags import PRIORITY_TAG  # the queue's order: higher first, absent is 0

from stock_platform.ingestion.assets import kafka_quote_batch, raw_quote_object, raw_quote_table
from stock_platform.orchestration.checks import freshness_checks
from stock_platform.partitions import minute_partitions
from stock_platform.transform.assets import VIEW_TAG

INGEST_TAG = "stock_platform/ingest"

INGEST = (kafka_quote_batch, raw_quote_object, raw_quote_table)
INGEST_ASSETS = dg.AssetSelection.assets(*INGEST)
# The minutes' assets: ingestion and the incremental dbt models after it (views excluded).
MINUTE_ASSETS = INGEST_ASSETS.downstream() - dg.AssetSelection.tag(*VIEW_TAG)
# The dbt data tests on the incremental models, as asset checks. The gold freshness checks are left out:
# the lag sensor evaluates them.
DBT_TESTS = (
    (MINUTE_ASSETS - INGEST_ASSETS)
    - (MINUTE_ASSETS - INGEST_ASSETS).without_checks()
    - dg.AssetSelection.checks(*freshness_checks)
)

minute_pipeline_job = dg.define_asset_job(
    "minute_pipeline_job",
    # The ingestion checks (dead letters, raw rows against the object, lake against warehouse) judge the
    # minute itself and stay in every run. dbt's data tests do not: run every minute they were 81 of a
    # run's 137 events and seconds of its time, and most read whole tables; dbt_tests_job runs them.
    selection=MINUTE_ASSETS.without_checks() | dg.AssetSelection.checks_for_assets(*INGEST),
    partitions_def=minute_partitions,
    executor_def=dg.in_process_executor,
    tags={INGEST_TAG: "minute"},
    description=(
        "Kafka batch → raw object → raw table → dbt silver and gold for the selected minute(s); "
        "started by kafka_lag_sensor for each closed minute, or for a range of minutes when catching up."
    ),
)

dbt_tests_job = dg.define_asset_job(
    "dbt_tests_job",
    selection=DBT_TESTS,
    partitions_def=minute_partitions,
    executor_def=dg.in_process_executor,
    # Queued with the minute runs: DuckDB's file has one user at a time, and the tests then see whole minutes.
    tags={INGEST_TAG: "tests"},
    description=(
        "dbt's data tests on silver and gold as asset checks, over the selected minutes; kafka_lag_sensor "
        "requests it every DBT_TESTS_EVERY_MINUTES minutes, right after a minute's run."
    ),
)

# Evaluates the dbt views' automation conditions (transform/assets.py), running by default so that a
# fresh install gets them; its runs carry the ingest tag, so they queue with the minute runs (one writer
# of the DuckDB file at a time). They go to the front of the queue: a view run creates a view and runs its
# tests, which read silver whole, so behind a day of queued catch-up runs it waited for all of them and
# then read all their rows (20 s and 1 GiB at the end of a 24 h catch-up, benchmarks/catch_up.py); after
# the run in progress it reads what silver holds so far. It changes no table the minute runs read.
gold_views_automation = dg.AutomationConditionSensorDefinition(
    "gold_views_automation",
    target=dg.AssetSelection.tag(*VIEW_TAG),
    run_tags={INGEST_TAG: "views", PRIORITY_TAG: "1"},
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
)
