"""Pure pieces of the dbt wiring: window → vars, manifest freshness, the translator's keys and groups."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil

import pytest

from stock_platform.partitions import minute_window
from stock_platform.transform.assets import StockDbtTranslator
from stock_platform.transform.project import (
    DBT_PROJECT_DIR,
    dbt_project,
    dbt_source_files,
    manifest_is_stale,
    prepare_dbt_project,
)
from stock_platform.transform.window import dbt_build_args, dbt_window_env, dbt_window_vars, environment


def test_partition_window_becomes_naive_utc_vars():
    start, end = minute_window("2026-11-27-14:34")
    assert dbt_window_vars(start, end) == {
        "min_minute": "2026-11-27 14:34:00",
        "max_minute": "2026-11-27 14:35:00",
    }


def test_aware_non_utc_window_is_converted_to_utc():
    paris = dt.timezone(dt.timedelta(hours=1))
    start = dt.datetime(2026, 11, 27, 15, 0, tzinfo=paris)
    assert dbt_window_vars(start, start + dt.timedelta(minutes=90)) == {
        "min_minute": "2026-11-27 14:00:00",
        "max_minute": "2026-11-27 15:30:00",
    }


def test_empty_window_is_refused():
    start = dt.datetime(2026, 11, 27, 14, 0, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="empty window"):
        dbt_window_vars(start, start)


def test_build_args_skip_unit_tests_and_pass_the_window():
    start, end = minute_window("2026-11-27-14:34")
    args = dbt_build_args(start, end)
    assert args[:3] == ["build", "--exclude-resource-type", "unit_test"]
    assert args[3] == "--vars"
    assert json.loads(args[4]) == {"min_minute": "2026-11-27 14:34:00", "max_minute": "2026-11-27 14:35:00"}


def test_manifest_is_stale_when_missing_or_older_than_a_source(tmp_path):
    manifest = tmp_path / "manifest.json"
    model = tmp_path / "model.sql"
    model.write_text("select 1")
    assert manifest_is_stale(manifest, [model])
    manifest.write_text("{}")
    os.utime(model, (1_000, 1_000))
    os.utime(manifest, (2_000, 2_000))
    assert not manifest_is_stale(manifest, [model])
    os.utime(model, (3_000, 3_000))
    assert manifest_is_stale(manifest, [model])


def test_source_files_cover_models_macros_and_project_files():
    names = {p.relative_to(DBT_PROJECT_DIR).as_posix() for p in dbt_source_files(DBT_PROJECT_DIR)}
    assert {"dbt_project.yml", "profiles.yml", "models/silver/silver_quotes.sql", "macros/json.sql"} <= names
    assert not any(name.startswith("target/") for name in names)


def test_translator_keys_models_by_name_and_groups_them_by_layer():
    translator = StockDbtTranslator()
    silver = {"resource_type": "model", "name": "silver_quotes", "fqn": ["stock_platform", "silver", "silver_quotes"],
              "config": {"schema": "silver"}, "meta": {}}  # fmt: skip
    gold = {
        **silver,
        "name": "gold_kpi",
        "fqn": ["stock_platform", "gold", "gold_kpi"],
        "config": {"schema": "gold"},
    }
    assert translator.get_asset_key(silver).to_user_string() == "silver_quotes"
    assert translator.get_group_name(silver) == "silver"
    assert translator.get_asset_key(gold).to_user_string() == "gold_kpi"
    assert translator.get_group_name(gold) == "gold"


def test_window_env_names_the_variables_the_models_read():
    start, end = minute_window("2026-11-27-14:34")
    assert dbt_window_env(start, end) == {
        "STOCK_PLATFORM_DBT_MIN_MINUTE": "2026-11-27 14:34:00",
        "STOCK_PLATFORM_DBT_MAX_MINUTE": "2026-11-27 14:35:00",
    }
    window_macro = (DBT_PROJECT_DIR / "macros" / "window.sql").read_text()
    assert all(f"env_var('{name}', '')" in window_macro for name in dbt_window_env(start, end))


def test_environment_sets_and_restores_variables(monkeypatch):
    monkeypatch.setenv("STOCK_PLATFORM_DBT_MIN_MINUTE", "before")
    monkeypatch.delenv("STOCK_PLATFORM_DBT_MAX_MINUTE", raising=False)
    with environment({"STOCK_PLATFORM_DBT_MIN_MINUTE": "a", "STOCK_PLATFORM_DBT_MAX_MINUTE": "b"}):
        assert (os.environ["STOCK_PLATFORM_DBT_MIN_MINUTE"], os.environ["STOCK_PLATFORM_DBT_MAX_MINUTE"]) == (
            "a",
            "b",
        )
    assert os.environ["STOCK_PLATFORM_DBT_MIN_MINUTE"] == "before"
    assert "STOCK_PLATFORM_DBT_MAX_MINUTE" not in os.environ


@pytest.mark.slow  # dbt parses the whole project: tens of seconds
def test_fresh_checkout_without_target_gets_its_manifest_once(tmp_path):
    checkout = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, checkout, ignore=shutil.ignore_patterns("target", "logs"))
    project = prepare_dbt_project(dbt_project(checkout))
    manifest = json.loads(project.manifest_path.read_text())
    models = {node["name"] for node in manifest["nodes"].values() if node["resource_type"] == "model"}
    assert models == {
        "stg_raw_quotes",
        "silver_quotes",
        "silver_rejected_quotes",
        "gold_kpi",
        "gold_candlestick",
        "gold_treechart",
    }
    (source,) = manifest["sources"].values()
    assert source["meta"]["dagster"]["asset_key"] == ["raw_quote_table"]
    built = project.manifest_path.stat().st_mtime_ns
    prepare_dbt_project(dbt_project(checkout))
    assert project.manifest_path.stat().st_mtime_ns == built
