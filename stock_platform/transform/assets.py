"""dbt's silver and gold models as Dagster assets, in two sets by how dbt builds them.

Incremental models read the run's minutes and are partitioned by the same minutes as the raw table.
Models rebuilt whole on every run (materialized `table`, e.g. gold_treechart) are not partitioned: a
partition of theirs would mean nothing, as every run replaces all of it. minute_pipeline_job holds both,
so one run per minute (or range of minutes) updates silver and then the whole-table models after it.
"""

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from stock_platform.partitions import CATCH_UP_POLICY, minute_partitions
from stock_platform.transform.window import DBT_BUILD_ARGS, dbt_window_env, environment

LAYERS = ("silver", "gold")


class StockDbtTranslator(DagsterDbtTranslator):
    """Asset keys are the model names (docs/contracts.md), without the schema prefix dagster-dbt adds for
    models with a custom schema; groups are the layers, taken from the model's folder.
    """

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props.get("resource_type") == "model":
            return dg.AssetKey(dbt_resource_props["name"])
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props.get("fqn") or []
        if len(fqn) > 2 and fqn[1] in LAYERS:
            return fqn[1]
        return super().get_group_name(dbt_resource_props)


# The partitioned set; every other model (table or view) is in the unpartitioned one.
INCREMENTAL_MODELS = "config.materialized:incremental"


def build_dbt_assets(project: DbtProject) -> list[dg.AssetsDefinition]:
    """The partitioned incremental models and the unpartitioned whole-table models."""
    return [build_incremental_assets(project), build_whole_table_assets(project)]


def _project_args(project: DbtProject) -> dict[str, Any]:
    return {
        "manifest": project.manifest_path,
        "project": project,
        "dagster_dbt_translator": StockDbtTranslator(),
    }


def build_incremental_assets(project: DbtProject) -> dg.AssetsDefinition:
    # A catch-up of many minutes is one dbt run over the run's whole range, not one per minute: the
    # models take any window, and dbt's start-up dominates a minute's work.
    @dbt_assets(
        **_project_args(project),
        select=INCREMENTAL_MODELS,
        partitions_def=minute_partitions,
        backfill_policy=CATCH_UP_POLICY,
    )
    def stock_dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
        """silver_quotes (typed, deduplicated quotes) and the incremental gold tables Power BI reads,
        updated for the run's minutes: silver reads the raw minutes loaded in the window, gold recomputes
        what those silver rows touch, so any order of runs equals a full refresh; dbt data tests are asset
        checks.
        """
        window = context.partition_time_window
        # The subprocess starts (and copies the environment) inside cli(); streaming happens after.
        with environment(dbt_window_env(window.start, window.end)):
            invocation = dbt.cli(DBT_BUILD_ARGS, context=context)
        yield from invocation.stream()

    return stock_dbt_models


def build_whole_table_assets(project: DbtProject) -> dg.AssetsDefinition:
    # Its own dbt invocation, as one @dbt_assets has one partitions definition: dbt's start-up (about 6 s
    # of CPU here) once per run, after the incremental models, which are not delayed by it.
    @dbt_assets(**_project_args(project), exclude=INCREMENTAL_MODELS, name="stock_dbt_whole_tables")
    def stock_dbt_whole_tables(context: dg.AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
        """The gold models rebuilt whole from silver on every run (gold_treechart), with their dbt data
        tests as asset checks; they take no window.
        """
        yield from dbt.cli(DBT_BUILD_ARGS, context=context).stream()

    return stock_dbt_whole_tables
