"""Transform's Definitions: the dbt models (silver, gold; minute-partitioned incremental models and
unpartitioned views), which run dbt in the run's process (transform/dbt_runner.py).

dbt reads its own environment (DBT_TARGET, DUCKDB_PATH, DBT_SNOWFLAKE_*, ...: declared with their defaults in
stock_platform/settings.py) through env_var() in profiles.yml, so nothing here holds a credential; the
settings are read only to refuse a Snowflake target without dbt's own sign-in.
"""

from __future__ import annotations

import dagster as dg

from stock_platform.settings import Settings, load_settings
from stock_platform.transform.assets import build_dbt_assets
from stock_platform.transform.project import dbt_project, prepare_dbt_project


def require_dbt_sign_in(settings: Settings) -> None:
    """dbt's Snowflake target signs in as its own key-pair service user (sql/snowflake/dbt_transformer.sql).

    Checked when the code location loads: docker-compose passes unset variables as empty strings, which
    dbt's required env_var() accepts, and the run would end in a bare login error instead of this message.
    """
    if settings.dbt_target == "snowflake":
        settings.require(
            "dbt_snowflake_user", "dbt_snowflake_private_key_path", because="when DBT_TARGET=snowflake"
        )


require_dbt_sign_in(load_settings())
project = prepare_dbt_project(dbt_project())
dbt_model_assets = build_dbt_assets(project)

defs = dg.Definitions(assets=dbt_model_assets)
