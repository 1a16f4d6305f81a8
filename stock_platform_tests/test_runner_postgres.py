"""`stock-platform run --postgres`: the local instance config with docker/dagster.yaml's storage section."""

from __future__ import annotations

import argparse
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml

from stock_platform import runner
from stock_platform.services.postgres import PostgresServer


def written(dagster_home: Path) -> dict:
    return yaml.safe_load((dagster_home / "dagster.yaml").read_text())


def test_the_option_is_off_by_default() -> None:
    parser = argparse.ArgumentParser()
    runner.add_arguments(parser)
    assert parser.parse_args([]).postgres is False
    assert parser.parse_args(["--postgres"]).postgres is True


def test_the_postgres_config_is_the_deployed_storage_on_the_local_port() -> None:
    text = runner.local_instance_yaml(Path("/home"), postgres_port=54321)
    assert text.startswith(runner.LOCAL_MARK)
    local, deployed = yaml.safe_load(text), yaml.safe_load(runner.POLICY_SOURCE.read_text())
    storage = deployed["storage"]
    storage["postgres"]["postgres_db"]["port"] = 54321
    assert local == {
        "storage": storage,
        **{name: deployed[name] for name in runner.POLICY_SECTIONS},
        "run_launcher": runner.LOCAL_RUN_LAUNCHER,
    }
    # The driver the environment has, and the credentials from the environment as compose passes them.
    postgres_db = local["storage"]["postgres"]["postgres_db"]
    assert postgres_db["scheme"] == "postgresql+psycopg2"
    assert postgres_db["password"] == {"env": "DAGSTER_POSTGRES_PASSWORD"}


@pytest.mark.integration
def test_prepare_dagster_home_opens_the_instance_on_postgres_and_switches_back(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in postgres_server.dagster_storage_env().items():
        monkeypatch.setenv(name, value)
    runner.prepare_dagster_home(tmp_path, postgres_port=postgres_server.port)
    assert written(tmp_path)["storage"]["postgres"]["postgres_db"]["port"] == postgres_server.port
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.run_launcher).__name__ == "WarmRunLauncher"
    with psycopg2.connect(**postgres_server.connection_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from pg_tables where tablename in ('runs', 'event_logs', 'jobs')")
        assert cur.fetchone() == (3,)
    conn.close()
    # A later run without --postgres writes the SQLite config over it (it is still ours, not hand-edited).
    runner.prepare_dagster_home(tmp_path)
    assert written(tmp_path)["storage"]["custom"] == {
        **runner.LOCAL_SQLITE_STORAGE,
        "config": {"base_dir": str(tmp_path.resolve())},
    }
