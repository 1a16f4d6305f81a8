"""Dagster's compute logs in the object store, as the docker-compose deployment keeps them.

docker/dagster.yaml's ``compute_logs`` section (dagster-aws's S3ComputeLogManager) is loaded as is, with
its environment pointing at the real local S3 server. One instance runs a job whose step prints to stdout
and stderr, as the run worker in the code-location container does; a second instance, with its own
local staging folder, reads the logs back, as the webserver in another container does.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import pytest
import yaml

from stock_platform.services.s3 import S3Server

DAGSTER_YAML = Path(__file__).resolve().parents[1] / "docker" / "dagster.yaml"
PREFIX = "compute-logs"


@dg.op
def say_hello() -> None:
    print("hello from stdout")
    print("hello from stderr", file=sys.stderr)


@dg.job
def printing_job() -> None:
    say_hello()


def compute_logs_section() -> dict[str, Any]:
    return yaml.safe_load(DAGSTER_YAML.read_text())["compute_logs"]


def container_instance(home: Path, storage: Path) -> dg.DagsterInstance:
    """An instance as one container has it: the shared run storage (Postgres in compose, one SQLite folder
    here), docker/dagster.yaml's compute logs, and its own local staging folder for them."""
    compute_logs = compute_logs_section()
    compute_logs["config"]["local_dir"] = str(home / "compute_logs_staging")
    config = {"storage": {"sqlite": {"base_dir": str(storage)}}, "compute_logs": compute_logs}
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return dg.DagsterInstance.from_config(str(home))


@pytest.fixture
def logs_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the local S3 server, and the environment docker-compose.yml gives the Dagster
    services (pointed at that server)."""
    bucket = f"dagster-logs-{uuid.uuid4().hex[:12]}"
    env = {
        "DAGSTER_COMPUTE_LOGS_BUCKET": bucket,
        "DAGSTER_COMPUTE_LOGS_PREFIX": PREFIX,
        "DAGSTER_COMPUTE_LOGS_ENDPOINT_URL": s3_server.url,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s3_client().create_bucket(Bucket=bucket)
    return bucket


def s3_client():
    # Credentials and region from the environment the fixture set, as the log manager reads them.
    return boto3.client("s3", endpoint_url=os.environ["DAGSTER_COMPUTE_LOGS_ENDPOINT_URL"])


def test_docker_dagster_yaml_keeps_compute_logs_in_s3_from_the_environment() -> None:
    section = compute_logs_section()
    assert (section["module"], section["class"]) == (
        "dagster_aws.s3.compute_log_manager",
        "S3ComputeLogManager",
    )
    config = section["config"]
    assert config["bucket"] == {"env": "DAGSTER_COMPUTE_LOGS_BUCKET"}
    assert config["prefix"] == {"env": "DAGSTER_COMPUTE_LOGS_PREFIX"}
    assert config["endpoint_url"] == {"env": "DAGSTER_COMPUTE_LOGS_ENDPOINT_URL"}
    # No credentials in the file: boto3 reads them from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
    assert not {"aws_access_key_id", "aws_secret_access_key"} & set(config)


@pytest.mark.integration
def test_another_instance_reads_a_runs_stdout_and_stderr_from_the_bucket(
    logs_bucket: str, tmp_path: Path
) -> None:
    storage = tmp_path / "shared_storage"
    with container_instance(tmp_path / "code_location", storage) as worker:
        assert type(worker.compute_log_manager).__name__ == "S3ComputeLogManager"
        result = printing_job.execute_in_process(instance=worker)
        assert result.success
        run_id = result.run_id

    # The logs left the worker: they are objects under the prefix.
    objects = s3_client().list_objects_v2(Bucket=logs_bucket, Prefix=f"{PREFIX}/")
    keys = sorted(o["Key"] for o in objects.get("Contents", []))
    assert keys and all(key.startswith(f"{PREFIX}/storage/{run_id}/compute_logs/") for key in keys), keys
    assert {key.rsplit(".", 1)[-1] for key in keys} == {"out", "err"}

    with container_instance(tmp_path / "webserver", storage) as webserver:
        [captured] = webserver.all_logs(run_id, of_type=dg.DagsterEventType.LOGS_CAPTURED)
        assert captured.dagster_event is not None
        file_key = captured.dagster_event.logs_captured_data.file_key
        manager = webserver.compute_log_manager
        log_key = manager.build_log_key_for_run(run_id, file_key)
        assert not (tmp_path / "webserver" / "compute_logs_staging").exists()  # nothing local to read
        data = manager.get_log_data(log_key)
    assert data.stdout is not None and b"hello from stdout" in data.stdout
    assert data.stderr is not None and b"hello from stderr" in data.stderr
