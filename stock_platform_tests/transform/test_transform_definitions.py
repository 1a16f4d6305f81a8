"""The transform Definitions load (building the manifest if needed) and plug into the ingestion graph."""

from __future__ import annotations

import dagster as dg

from stock_platform.partitions import minute_partitions
from stock_platform.transform.definitions import defs

MODELS = {"silver_quotes", "silver_rejected_quotes", "gold_kpi", "gold_candlestick", "gold_treechart"}


def test_incremental_models_are_minute_partitioned_and_views_are_not():
    graph = defs.resolve_asset_graph()
    models = {key.to_user_string(): graph.get(key) for key in graph.materializable_asset_keys}
    assert set(models) == MODELS
    assert {name: node.group_name for name, node in models.items()} == {
        "silver_quotes": "silver",
        "silver_rejected_quotes": "silver",
        "gold_kpi": "gold",
        "gold_candlestick": "gold",
        "gold_treechart": "gold",
    }
    # gold_treechart is a view, computed when read: a minute partition of it would mean nothing, and no
    # minute's run rebuilds it; its automation condition creates it when missing or changed.
    assert {name for name, node in models.items() if node.partitions_def is None} == {"gold_treechart"}
    assert all(
        node.partitions_def == minute_partitions for name, node in models.items() if name != "gold_treechart"
    )
    view = models["gold_treechart"]
    assert view.automation_condition is not None and view.code_version
    assert all(models[name].automation_condition is None for name in MODELS - {"gold_treechart"})
    from stock_platform.definitions import defs as code_location  # the sensor is orchestration's

    sensor = code_location.resolve_sensor_def("gold_views_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_view_runs_go_to_the_front_of_the_queue_and_every_job_runs_in_process():
    from dagster._core.storage.tags import PRIORITY_TAG as QUEUE_PRIORITY_TAG

    from stock_platform.definitions import defs as code_location
    from stock_platform.orchestration.jobs import INGEST_TAG, PRIORITY_TAG

    # The tag Dagster's queue orders by (higher first), so a view run is not left behind a day of
    # catch-up runs; and still the ingest tag, so it never writes beside a minute run.
    assert PRIORITY_TAG == QUEUE_PRIORITY_TAG
    tags = code_location.resolve_sensor_def("gold_views_automation").run_tags
    assert int(tags[PRIORITY_TAG]) > 0 and tags[INGEST_TAG] == "views"
    # The automation sensor's and the UI's runs use the asset job Dagster builds, which takes the code
    # location's executor: no step starts a Python of its own.
    jobs = [code_location.resolve_implicit_global_asset_job_def()]
    jobs += [
        code_location.resolve_job_def(n)
        for n in ("minute_pipeline_job", "dbt_tests_job", "purge_history_job")
    ]
    assert {job.executor_def.name for job in jobs} == {dg.in_process_executor.name}


def test_the_staging_model_is_no_asset_and_lineage_goes_through_it():
    # stg_raw_quotes is ephemeral (inlined into silver), so silver's parent stays the raw table asset.
    graph = defs.resolve_asset_graph()
    assert dg.AssetKey("stg_raw_quotes") not in graph.get_all_asset_keys()


def test_silver_reads_the_raw_table_asset_and_gold_reads_silver():
    graph = defs.resolve_asset_graph()

    def parents(name: str) -> set[str]:
        return {key.to_user_string() for key in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("silver_quotes") == {"raw_quote_table"}
    # The rejected rows are the raw rows silver_quotes left out that fail validation.
    assert parents("silver_rejected_quotes") == {"raw_quote_table", "silver_quotes"}
    assert (
        parents("gold_kpi") == parents("gold_candlestick") == parents("gold_treechart") == {"silver_quotes"}
    )


def test_dbt_data_tests_are_asset_checks_on_their_models():
    graph = defs.resolve_asset_graph()
    per_model: dict[str, int] = {}
    for check in graph.asset_check_keys:
        per_model[check.asset_key.to_user_string()] = per_model.get(check.asset_key.to_user_string(), 0) + 1
    # Each gold model has a `finite` test over its double columns (no NaN or infinity reaches Power BI).
    assert per_model == {
        "silver_quotes": 9,
        "silver_rejected_quotes": 4,
        "gold_kpi": 6,
        "gold_candlestick": 8,
        "gold_treechart": 4,
    }


def test_minute_runs_leave_the_data_tests_to_dbt_tests_job():
    """Every minute's run keeps the ingestion checks only; dbt_tests_job holds exactly the data tests of the
    incremental models (the gold freshness checks are the lag sensor's)."""
    from stock_platform.definitions import defs as code_location

    graph = code_location.resolve_asset_graph()
    transform_graph = defs.resolve_asset_graph()
    incremental = {k for k in transform_graph.materializable_asset_keys if graph.get(k).partitions_def}
    dbt_tests = {c for c in transform_graph.asset_check_keys if c.asset_key in incremental}

    def checks_of(job: str) -> set[dg.AssetCheckKey]:
        return set(code_location.resolve_job_def(job).asset_layer.asset_graph.asset_check_keys)

    minute_checks = checks_of("minute_pipeline_job")
    assert {c.name for c in minute_checks} == {
        "no_dead_letters", "rows_match_raw_object", "warehouse_has_every_lake_minute"
    }  # fmt: skip
    assert len(dbt_tests) == 27
    assert checks_of("dbt_tests_job") == dbt_tests
    tests_job = code_location.resolve_job_def("dbt_tests_job")
    assert tests_job.tags["stock_platform/ingest"] == "tests"  # queued with the minute runs
