"""Transform's Definitions: the dbt models (silver, gold) and the dbt CLI resource.

dbt reads its own environment (DBT_TARGET, DUCKDB_PATH, SNOWFLAKE_*) through env_var() in profiles.yml,
so nothing here reads the environment or holds a credential.
"""

from __future__ import annotations

import dagster as dg

from stock_platform.transform.assets import build_dbt_assets
from stock_platform.transform.project import dbt_cli_resource, dbt_project, prepare_dbt_project

project = prepare_dbt_project(dbt_project())
stock_dbt_models = build_dbt_assets(project)

defs = dg.Definitions(
    assets=[stock_dbt_models],
    resources={"dbt": dbt_cli_resource(project)},
)
