"""dbt's silver and gold models as Dagster assets, in two sets by how dbt builds them.

Incremental models read the run's minutes and are partitioned by the same minutes as the raw table;
minute_pipeline_job builds them. The other models (views, e.g. gold_treechart) are not partitioned: a
view is computed when read, so it is current without any run, and it is (re)created only when it is
missing or its SQL changed, by an automation condition rather than by every minute's run (a second dbt
invocation per run cost ~20 s of quote-to-gold freshness, measured with benchmarks/freshness.py).
"""

import datetime as dt
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtProject, dbt_assets

from stock_platform.dashboard.snapshot import publish_after_build
from stock_platform.partitions import CATCH_UP_POLICY, minute_partitions, minute_window, run_minute_range
from stock_platform.transform.dbt_runner import build_events
from stock_platform.transform.window import DBT_BUILD_ARGS, dbt_window_env

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


# Marks the view assets: minute_pipeline_job leaves them out, gold_views_automation targets them.
VIEW_TAG = ("stock_platform/dbt", "view")


class ViewTranslator(StockDbtTranslator):
    """Views are created when missing (once silver exists) and again when their SQL changes (dbt's
    checksum is the asset's code version)."""

    def get_tags(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, str]:
        return {**super().get_tags(dbt_resource_props), VIEW_TAG[0]: VIEW_TAG[1]}

    def get_automation_condition(self, dbt_resource_props: Mapping[str, Any]) -> dg.AutomationCondition:
        # Not on_missing(): it waits for every dep partition (60 days of silver minutes), and the view
        # needs only silver's table. After a minute's run updated silver, a missing view is requested (a
        # failed request is tried again after the next minute's run).
        missing = (
            dg.AutomationCondition.missing()
            & dg.AutomationCondition.any_deps_updated()
            & ~dg.AutomationCondition.in_progress()
        ).with_label("missing, silver just updated")
        return missing | dg.AutomationCondition.code_version_changed()


def build_dbt_assets(project: DbtProject) -> list[dg.AssetsDefinition]:
    """The partitioned incremental models and the unpartitioned views."""
    return [build_incremental_assets(project), build_view_assets(project)]


def _project_args(project: DbtProject, translator: DagsterDbtTranslator) -> dict[str, Any]:
    return {
        "manifest": project.manifest_path,
        "project": project,
        "dagster_dbt_translator": translator,
    }


def build_incremental_assets(project: DbtProject) -> dg.AssetsDefinition:
    translator = StockDbtTranslator()

    # A catch-up of many minutes is one dbt run over the run's whole range, not one per minute: the
    # models take any window, and dbt's start-up dominates a minute's work.
    @dbt_assets(
        **_project_args(project, translator),
        select=INCREMENTAL_MODELS,
        partitions_def=minute_partitions,
        backfill_policy=CATCH_UP_POLICY,
    )
    def stock_dbt_models(context: dg.AssetExecutionContext) -> Iterator[Any]:
        """silver_quotes (typed, deduplicated quotes) and the incremental gold tables Power BI reads,
        updated for the run's minutes: silver reads the raw minutes loaded in the window, gold recomputes
        what those silver rows touch, so any order of runs equals a full refresh; dbt data tests are asset
        checks.
        """
        yield from build_events(
            context,
            DBT_BUILD_ARGS,
            translator,
            env=dbt_window_env(*run_window(context)),
            project_dir=Path(project.project_dir),
        )
        if context.selected_asset_keys:  # a dbt_tests_job run changes no table
            publish_after_build(context.log)

    return stock_dbt_models


def run_window(context: dg.AssetExecutionContext) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the run's minutes. A step that runs checks only (dbt_tests_job) has no partitions
    definition in its context, so the window comes from the run's partition tags there."""
    if context.selected_asset_keys:
        window = context.partition_time_window
        return window.start, window.end
    minutes = run_minute_range(context.run.tags)
    if minutes is None:
        raise dg.Failure("the dbt models and their tests run for minutes: select a minute or a range")
    return minute_window(minutes[0])[0], minute_window(minutes[1])[1]


def build_view_assets(project: DbtProject) -> dg.AssetsDefinition:
    translator = ViewTranslator()

    @dbt_assets(**_project_args(project, translator), exclude=INCREMENTAL_MODELS, name="stock_dbt_views")
    def stock_dbt_views(context: dg.AssetExecutionContext) -> Iterator[Any]:
        """The gold views over silver (gold_treechart), created when missing or changed, with their dbt
        data tests as asset checks; they take no window.
        """
        yield from build_events(context, DBT_BUILD_ARGS, translator, project_dir=Path(project.project_dir))
        publish_after_build(context.log)

    return stock_dbt_views
