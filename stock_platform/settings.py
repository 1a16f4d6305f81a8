"""Every environment variable the platform reads, with its type and its one default.

The wiring sites (each ``definitions.py``, the producer and topic CLIs, ``stock-platform run``, the
rebuild CLI and the local services) call ``load_settings`` once and pass values on; nothing else reads
these variables. The README's variable table and ``.env.example`` are checked against these classes by
``stock_platform_tests/test_settings.py``.

Secrets are ``SecretStr`` here so they never print; Dagster resources still receive them as
``dg.EnvVar(name)``, resolved at run time, so their values never land in the definitions.
An empty variable counts as unset, as in ``.env.example``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# The default shown in the docs when the real one is derived at load time (from another variable or the
# checkout's place), so the docs check compares the same text the README and .env.example show.
_SHOWN = "shown_default"


def _derived(shown: str) -> Any:
    return Field(default=None, json_schema_extra={_SHOWN: shown})


class SettingsError(ValueError):
    """A variable has a value the platform cannot use; the message names it and what it must be."""


class _Variables(BaseSettings):
    """Settings whose only source is the mapping load_settings passes in (os.environ by default), so a
    given mapping is read alone, without the process's environment mixed in."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


class Settings(_Variables):
    """The variables the platform's Python code and the dbt profile read (field name = variable name)."""

    # Quote source
    finnhub_api_key: SecretStr | None = None
    finnhub_api_url: str = "https://api.finnhub.io/api/v1"

    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic: str = "stock-quotes"
    kafka_dlq_topic: str = "stock-quotes-dlq"
    kafka_ingest_group: str = "stock-platform-ingest"
    # 3, as the code always created: one local broker, and more can be set when consumers scale out.
    kafka_topic_partitions: PositiveInt = 3
    kafka_grace_seconds: NonNegativeFloat = 2.0
    kafka_require_log_append_time: bool = True

    # Object store
    object_store: Literal["local", "s3"] = "local"
    lake_dir: Path | None = _derived("$STOCK_PLATFORM_HOME/lake")
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = "stock-platform-pipeline"
    s3_secret_key: SecretStr | None = None
    s3_bucket: str = "stock-quotes-raw"
    s3_secure: bool = False

    # Warehouse: the loader's Snowflake user (raw table) and dbt's (silver, gold), one role each
    warehouse: Literal["duckdb", "snowflake"] = "duckdb"
    duckdb_path: Path | None = _derived("$STOCK_PLATFORM_HOME/warehouse.duckdb")
    dbt_target: Literal["duckdb", "snowflake", "fakesnow"] = "duckdb"
    # Read by dbt_project/profiles.yml only (DuckDB's memory cap for the models; it spills beyond it).
    dbt_duckdb_memory_limit: str = "320MB"
    snowflake_account: str = ""
    snowflake_user: str = ""
    snowflake_private_key_path: str = ""
    snowflake_private_key_passphrase: SecretStr | None = None
    snowflake_password: SecretStr | None = None
    snowflake_role: str = "STOCK_PLATFORM_LOADER"
    snowflake_warehouse: str = "STOCK_PLATFORM_WH"
    snowflake_database: str = "STOCK_PLATFORM"
    snowflake_schema: str = "BRONZE"
    dbt_snowflake_user: str = ""
    dbt_snowflake_private_key_path: str = ""
    dbt_snowflake_private_key_passphrase: SecretStr | None = None
    dbt_snowflake_role: str = "STOCK_PLATFORM_TRANSFORMER"
    fakesnow_host: str = "127.0.0.1"
    fakesnow_port: PositiveInt = 8085
    fakesnow_database: str = "STOCK_PLATFORM"
    fakesnow_schema: str = "BRONZE"

    # Lag sensor and the checks it evaluates (the same values when a check is run from the UI)
    lag_warn_threshold: NonNegativeInt = 10_000
    gold_fresh_within_seconds: PositiveInt = 180
    # The longest run the lag sensor requests when behind. A 24 h backlog (8.64 M quotes) took, from
    # `dagster dev`'s start: 136-142 s in 360-minute runs, 145 s in 480, 146-154 s in 240 (docs/benchmarks.md,
    # stop 29; 157-163 s in 360 when the machine ran ~12 % slower), the peak tree PSS ~1.4 GiB for each
    # (dbt's DuckDB cap bounds it); past 360 the dbt step of a run grows faster than its minutes. A short
    # outage still gets one run of just its minutes.
    catch_up_batch_minutes: PositiveInt = 360
    # dbt's data tests run every this many minutes (dbt_tests_job), not in every minute's run
    dbt_tests_every_minutes: PositiveInt = 15

    # Instance history (orchestration/purge.py, docs/operations.md). Successful runs also bound the minute
    # partitions the UI lists (partitions.py): a minute whose run was purged has no status left to show.
    history_success_days: PositiveInt = 3
    history_failure_days: PositiveInt = 7
    history_runless_days: PositiveInt = 1
    # The webserver as the runs reach it: the hourly purge reloads the code location through it once a UTC
    # day, so the partition window moves in a long-lived code server
    dagster_webserver_url: str = "http://127.0.0.1:3000"

    # Live dashboard (stock_platform/dashboard): it reads gold as the read-only BI role on Snowflake
    # (sql/snowflake/bi_reader.sql), and a snapshot file of gold on DuckDB
    dashboard_port: PositiveInt = 8501
    dashboard_refresh_seconds: PositiveFloat = 3.0
    dagster_ui_url: str = "http://127.0.0.1:3000"
    dashboard_snowflake_user: str = ""
    dashboard_snowflake_private_key_path: str = ""
    dashboard_snowflake_private_key_passphrase: SecretStr | None = None
    dashboard_snowflake_role: str = "STOCK_PLATFORM_BI_READER"
    dashboard_snowflake_warehouse: str = "STOCK_PLATFORM_BI_WH"

    # Local state
    stock_platform_home: Path = Path(".stock_platform")
    stock_platform_cache: Path | None = _derived(".cache")
    dagster_home: Path | None = _derived("$STOCK_PLATFORM_HOME/dagster_home")

    @property
    def home(self) -> Path:
        """Everything a local run writes (lake, warehouse file, service data, Dagster instance)."""
        return self.stock_platform_home.resolve()

    @property
    def lake_root(self) -> Path:
        return self.lake_dir or self.home / "lake"

    @property
    def duckdb_file(self) -> Path:
        return self.duckdb_path or self.home / "warehouse.duckdb"

    @property
    def gold_snapshot_file(self) -> Path:
        """The dashboard's read-only copy of gold, beside the warehouse file (dashboard/snapshot.py)."""
        return gold_snapshot_path(self.duckdb_file)

    @property
    def dagster_home_dir(self) -> Path:
        return self.dagster_home or self.home / "dagster_home"

    @property
    def cache_dir(self) -> Path:
        """Downloaded jars and binaries, keyed by version; git-ignored, kept across runs."""
        return self.stock_platform_cache or PROJECT_ROOT / ".cache"

    def require(self, *names: str, because: str) -> None:
        """SettingsError naming every variable of ``names`` that is unset."""
        missing = [name.upper() for name in names if not getattr(self, name)]
        if missing:
            raise SettingsError(f"{' and '.join(missing)} must be set {because}")


def gold_snapshot_path(duckdb_file: Path) -> Path:
    """Where the dashboard's copy of the gold tables in ``duckdb_file`` is published."""
    return duckdb_file.with_name(duckdb_file.stem + ".gold-snapshot.duckdb")


class ComposeSettings(_Variables):
    """Variables only docker-compose (and the Dagster instance in docker/dagster.yaml) read.

    No Python code reads them; they are here so the docs check covers every variable.
    """

    minio_root_user: str = "minio-root"
    minio_root_password: SecretStr | None = None
    minio_image: str = "minio/minio:RELEASE.2025-09-07T16-13-09Z"
    minio_mc_image: str = "minio/mc:RELEASE.2025-08-13T08-35-41Z"
    dagster_postgres_user: str = "dagster"
    dagster_postgres_password: SecretStr | None = None
    dagster_postgres_db: str = "dagster"
    dagster_postgres_host: str = "postgres"
    dagster_s3_access_key: str = "stock-platform-dagster"
    dagster_s3_secret_key: SecretStr | None = None


SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (Settings, ComposeSettings)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The platform's settings from ``env`` (default: this process's environment) and nothing else.

    A given mapping is read as is, without os.environ: `stock-platform run` builds its children's
    environment, and tests pass their own. Raises SettingsError naming each bad variable.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {name.lower(): value for name, value in env.items() if value.strip()}
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None


_EXPECTED = {
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "bool_parsing": "true or false",
}


def describe(exc: ValidationError) -> str:
    """One short sentence per bad variable: its name, what it must be, and (unless secret) its value."""
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0])
        ctx = error.get("ctx", {})
        if error["type"] in _EXPECTED:
            expected = _EXPECTED[error["type"]]
        elif error["type"] == "literal_error":
            expected = f"one of {ctx['expected']}"
        elif error["type"] == "greater_than":
            expected = f"greater than {ctx['gt']}"
        elif error["type"] == "greater_than_equal":
            expected = f"at least {ctx['ge']}"
        else:
            expected = f"valid ({error['msg']})"
        field = Settings.model_fields.get(name)
        secret = field is not None and "SecretStr" in str(field.annotation)
        problems.append(
            f"{name.upper()} must be {expected}" + ("" if secret else f", got {error['input']!r}")
        )
    return "; ".join(problems)


def documented_default(cls: type[BaseSettings], name: str) -> str:
    """The default of a field as the README and .env.example show it ("" when there is none)."""
    field = cls.model_fields[name]
    extra = field.json_schema_extra
    if isinstance(extra, dict) and _SHOWN in extra:
        return str(extra[_SHOWN])
    if field.default is None:
        return ""
    if isinstance(field.default, bool):
        return str(field.default).lower()
    if isinstance(field.default, float) and field.default.is_integer():
        return str(int(field.default))
    return str(field.default)
