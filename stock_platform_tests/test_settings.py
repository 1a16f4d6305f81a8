"""The settings module is the one list of variables: the README table and .env.example say the same
names and defaults, the dbt profile and the wiring read nothing else, and bad values get short messages."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest
from pydantic import SecretStr

from stock_platform.settings import (
    PROJECT_ROOT,
    SETTINGS_CLASSES,
    SettingsError,
    documented_default,
    load_settings,
)
from stock_platform.transform.window import WINDOW_ENV
from stock_platform_tests.test_docker_compose import parse_env_example

README = PROJECT_ROOT / "README.md"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
PROFILES = PROJECT_ROOT / "dbt_project" / "profiles.yml"
TABLE_ROW = re.compile(r"^\|\s*`(?P<name>[A-Z][A-Z0-9_]*)`\s*\|\s*(?P<default>[^|]*?)\s*\|")


def declared() -> dict[str, tuple[str, bool]]:
    """Variable name -> (its default as the docs show it, whether it is a secret)."""
    return {
        name.upper(): (documented_default(cls, name), field.annotation == SecretStr | None)
        for cls in SETTINGS_CLASSES
        for name, field in cls.model_fields.items()
    }


def readme_defaults(text: str) -> dict[str, str]:
    """Name -> default cell of the table under "## Environment variables" ("empty" -> "", backticks off)."""
    section = text.split("## Environment variables\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        match = TABLE_ROW.match(line)
        if match:
            assert match["name"] not in rows, f"README.md's table lists {match['name']} twice"
            cell = match["default"]
            rows[match["name"]] = "" if cell == "empty" else cell.removeprefix("`").removesuffix("`")
    return rows


def test_readme_table_parser_reads_names_and_defaults() -> None:
    text = (
        "## Environment variables\n\n| `A` | `1` | x | y |\n| `B` | empty | x | y |\n\n## Next\n| `C` | `2` |"
    )
    assert readme_defaults(text) == {"A": "1", "B": ""}


def test_readme_table_lists_every_setting_with_its_default() -> None:
    documented = readme_defaults(README.read_text())
    expected = {name: default for name, (default, _) in declared().items()}
    assert sorted(set(expected) - set(documented)) == [], "add these to README.md's table"
    assert sorted(set(documented) - set(expected)) == [], "not in stock_platform/settings.py"
    wrong = {
        name: (documented[name], default) for name, default in expected.items() if documented[name] != default
    }
    assert wrong == {}, "README.md default differs from settings.py's (README, settings)"


def test_env_example_lists_every_setting_with_its_default() -> None:
    example = parse_env_example(ENV_EXAMPLE.read_text())
    settings = declared()
    assert sorted(set(settings) - set(example)) == [], "add these to .env.example"
    assert sorted(set(example) - set(settings)) == [], "not in stock_platform/settings.py"
    for name, (value, _, _) in example.items():
        default, secret = settings[name]
        if secret:
            # A secret has no default: .env.example leaves it empty or shows a placeholder to replace.
            assert value == "" or value.startswith("change-me-"), f"{name} in .env.example: {value!r}"
        else:
            assert value == default, (
                f"{name} in .env.example is {value!r}; settings.py's default is {default!r}"
            )


def test_the_dbt_profile_reads_only_declared_variables() -> None:
    read = set(re.findall(r"env_var\('([A-Z0-9_]+)'", PROFILES.read_text()))
    assert read, "no env_var() found in profiles.yml"
    # The incremental window is passed by the code to dbt, not set by anyone.
    assert sorted(read - set(declared()) - set(WINDOW_ENV.values())) == []


def test_python_code_wires_only_declared_secrets_as_env_vars() -> None:
    source = "\n".join(path.read_text() for path in (PROJECT_ROOT / "stock_platform").rglob("*.py"))
    wired = set(re.findall(r"EnvVar\(\"([A-Z0-9_]+)\"\)", source))
    secrets = {name for name, (_, secret) in declared().items() if secret}
    assert wired, "no dg.EnvVar found"
    assert sorted(wired - secrets) == []


def test_defaults_need_no_environment() -> None:
    settings = load_settings({})
    assert (settings.kafka_topic_partitions, settings.kafka_grace_seconds) == (3, 2.0)
    assert settings.home == Path(".stock_platform").resolve()
    assert settings.lake_root == settings.home / "lake"
    assert settings.duckdb_file == settings.home / "warehouse.duckdb"
    assert settings.dagster_home_dir == settings.home / "dagster_home"
    assert settings.cache_dir == PROJECT_ROOT / ".cache"


def test_values_are_parsed_and_empty_means_unset(tmp_path: Path) -> None:
    settings = load_settings({
        "KAFKA_GRACE_SECONDS": "2.5", "KAFKA_REQUIRE_LOG_APPEND_TIME": "off", "S3_SECURE": "yes",
        "KAFKA_TOPIC": "", "STOCK_PLATFORM_HOME": str(tmp_path), "UNRELATED": "x",
    })  # fmt: skip
    assert (settings.kafka_grace_seconds, settings.kafka_require_log_append_time, settings.s3_secure) == (
        2.5,
        False,
        True,
    )
    assert settings.kafka_topic == "stock-quotes"
    assert settings.lake_root == tmp_path / "lake"


def test_a_given_mapping_is_read_without_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_TOPIC", "from-the-process")
    assert load_settings({}).kafka_topic == "stock-quotes"
    assert load_settings().kafka_topic == "from-the-process"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_GRACE_SECONDS": "abc"}, "KAFKA_GRACE_SECONDS must be a number, got 'abc'"),
        ({"KAFKA_TOPIC_PARTITIONS": "six"}, "KAFKA_TOPIC_PARTITIONS must be a whole number, got 'six'"),
        ({"KAFKA_TOPIC_PARTITIONS": "0"}, "KAFKA_TOPIC_PARTITIONS must be greater than 0, got '0'"),
        ({"S3_SECURE": "maybe"}, "S3_SECURE must be true or false, got 'maybe'"),
        ({"OBJECT_STORE": "ftp"}, "OBJECT_STORE must be one of 'local' or 's3', got 'ftp'"),
        (
            {"WAREHOUSE": "oracle", "LAG_WARN_THRESHOLD": "-1"},
            "WAREHOUSE must be one of 'duckdb' or 'snowflake', got 'oracle'; "
            "LAG_WARN_THRESHOLD must be at least 0, got '-1'",
        ),
    ],
)
def test_a_bad_value_is_named_in_one_short_message(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(env)
    assert str(raised.value) == message


def test_secrets_never_print() -> None:
    settings = load_settings({"FINNHUB_API_KEY": "k-123", "SNOWFLAKE_PASSWORD": "pw-456"})
    assert "k-123" not in repr(settings) and "pw-456" not in str(settings)
    assert settings.finnhub_api_key is not None and settings.finnhub_api_key.get_secret_value() == "k-123"


def test_require_names_every_missing_variable() -> None:
    with pytest.raises(SettingsError, match="^SNOWFLAKE_ACCOUNT and SNOWFLAKE_USER must be set when x$"):
        load_settings({}).require("snowflake_account", "snowflake_user", because="when x")
    load_settings({"SNOWFLAKE_USER": "u"}).require("snowflake_user", because="when x")


def test_the_ui_run_checks_use_the_sensors_configured_thresholds() -> None:
    from stock_platform.orchestration import definitions as orchestration
    from stock_platform.orchestration.checks import GOLD_ASSETS, LagSensorConfig, consumer_lag_check
    from stock_platform_tests.fake_kafka import FakeCluster

    config = orchestration.lag_sensor_config(
        load_settings({"LAG_WARN_THRESHOLD": "5", "GOLD_FRESH_WITHIN_SECONDS": "30"})
    )
    assert (config.lag_warn_threshold, config.fresh_within_s, config.batch_minutes) == (5, 30, 360)
    assert LagSensorConfig() == orchestration.lag_sensor_config(load_settings({}))
    # Every check is bound to the resource the sensor reads, whoever runs it.
    checks = [c for c in orchestration.defs.asset_checks or [] if isinstance(c, dg.AssetChecksDefinition)]
    assert len(checks) == 1 + len(GOLD_ASSETS) and all(
        "lag_sensor" in c.required_resource_keys for c in checks
    )

    cluster = FakeCluster()
    for offset in range(7):
        cluster.append(0, 1_000_000 + offset, b"{}")
    assert consumer_lag_check(kafka=cluster.resource(), lag_sensor=config).passed is False  # 7 > 5
    assert consumer_lag_check(kafka=cluster.resource(), lag_sensor=LagSensorConfig()).passed is True


def test_the_local_instance_keeps_the_deployments_run_policy(tmp_path: Path) -> None:
    import yaml

    from stock_platform.runner import (
        LOCAL_RUN_LAUNCHER,
        LOCAL_SQLITE_STORAGE,
        POLICY_SECTIONS,
        POLICY_SOURCE,
        prepare_dagster_home,
    )

    prepare_dagster_home(tmp_path)
    local = yaml.safe_load((tmp_path / "dagster.yaml").read_text())
    deployed = yaml.safe_load(POLICY_SOURCE.read_text())
    # One policy: the local file holds docker/dagster.yaml's sections, the warm launcher and the batched
    # SQLite storage in the home, and no log manager.
    storage = {"custom": {**LOCAL_SQLITE_STORAGE, "config": {"base_dir": str(tmp_path.resolve())}}}
    assert local == {
        "storage": storage,
        **{name: deployed[name] for name in POLICY_SECTIONS},
        "run_launcher": LOCAL_RUN_LAUNCHER,
    }
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.event_log_storage).__name__ == "BatchedSqliteEventLogStorage"
        # Dagster's default SQLite files, where an instance without this storage kept them.
        assert instance.event_log_storage._base_dir == str(tmp_path.resolve() / "history" / "runs")  # type: ignore[attr-defined]
        assert type(instance.run_launcher).__name__ == "WarmRunLauncher"
        assert type(instance.run_coordinator).__name__ == "PromptRunCoordinator"
        assert type(instance.compute_log_manager).__name__ == "LocalComputeLogManager"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.tag_concurrency_limits[0] == {
            "key": "stock_platform/ingest",
            "limit": 1,
        }
    # A file the user edited (without the header line) is left alone.
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: true\n")
    prepare_dagster_home(tmp_path)
    assert (tmp_path / "dagster.yaml").read_text() == "telemetry:\n  enabled: true\n"


def test_a_snowflake_dbt_target_needs_dbts_own_key_pair_user() -> None:
    from stock_platform.transform.definitions import require_dbt_sign_in

    require_dbt_sign_in(load_settings({"DBT_TARGET": "duckdb"}))
    with pytest.raises(SettingsError, match="DBT_SNOWFLAKE_USER and DBT_SNOWFLAKE_PRIVATE_KEY_PATH"):
        require_dbt_sign_in(load_settings({"DBT_TARGET": "snowflake", "DBT_SNOWFLAKE_PRIVATE_KEY_PATH": ""}))
    require_dbt_sign_in(
        load_settings(
            {"DBT_TARGET": "snowflake", "DBT_SNOWFLAKE_USER": "U", "DBT_SNOWFLAKE_PRIVATE_KEY_PATH": "/k.p8"}
        )
    )
