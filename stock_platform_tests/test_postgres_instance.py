"""docker/dagster.yaml's own instance config on a real PostgreSQL: the storage compose gives the webserver,
daemon and code location, loaded from the file itself (not a copy), migrated by the `dagster` CLI, written
by a run, and driven by `dagster-daemon` through the file's run queue.

Only what exists solely inside compose is replaced: the port (compose's network reaches Postgres on 5432;
the local server listens on a free one) and the compute logs (MinIO there, files here).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest
import yaml

from stock_platform.services import postgres
from stock_platform.services.paths import PROJECT_ROOT
from stock_platform.services.postgres import PostgresServer
from stock_platform.services.process import MissingPrerequisite, log_tail, pid_alive, stop_process

pytestmark = pytest.mark.integration

DEPLOYED = PROJECT_ROOT / "docker" / "dagster.yaml"
BIN = Path(sys.executable).parent
RUN_LIFECYCLE = [
    dg.DagsterEventType.RUN_ENQUEUED,
    dg.DagsterEventType.RUN_STARTING,
    dg.DagsterEventType.RUN_START,
    dg.DagsterEventType.RUN_SUCCESS,
]

# A code location small enough to load in a second: one job, and a sensor that requests two runs of it once
# (the run keys deduplicate however many times the sensor ticks): the deployed PromptRunCoordinator starts the
# first at submission, the second waits in the queue behind it and is started by the queue's daemon.
LOCATION = """
import dagster as dg


@dg.op
def answer() -> int:
    return 42


@dg.job
def tiny_job():
    answer()


@dg.sensor(job=tiny_job, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
def request_once(context):
    return [dg.RunRequest(run_key="first"), dg.RunRequest(run_key="second")]


defs = dg.Definitions(jobs=[tiny_job], sensors=[request_once])
"""


def instance_config(server: PostgresServer, home: Path) -> dict[str, Any]:
    config = yaml.safe_load(DEPLOYED.read_text())
    config["storage"]["postgres"]["postgres_db"]["port"] = server.port
    config["compute_logs"] = {
        "module": "dagster.core.storage.local_compute_log_manager",
        "class": "LocalComputeLogManager",
        "config": {"base_dir": str(home / "compute_logs")},
    }
    return config


@pytest.fixture
def instance_home(postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME with the deployed config, and the DAGSTER_POSTGRES_* variables it reads set."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config(postgres_server, home)))
    for name, value in {**postgres_server.dagster_storage_env(), "DAGSTER_HOME": str(home)}.items():
        monkeypatch.setenv(name, value)
    return home


def location_module(folder: Path) -> Path:
    path = folder / "tiny_location.py"
    path.write_text(LOCATION)
    return path


def query(server: PostgresServer, statement: str, *params: Any) -> list[tuple]:
    """As the instance's own role, over TCP with its password, as the Dagster services connect."""
    with psycopg2.connect(**server.connection_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        rows = cur.fetchall()
    conn.close()
    return rows


def test_a_missing_server_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres.shutil, "which", lambda name: None)
    monkeypatch.setattr(postgres, "DEBIAN_ROOT", tmp_path)
    with pytest.raises(MissingPrerequisite, match="apt-get install postgresql"):
        PostgresServer(tmp_path / "log").start()


def test_as_root_without_a_postgres_user_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_user(name: str) -> None:
        raise KeyError(name)

    monkeypatch.setattr(postgres.os, "geteuid", lambda: 0)
    monkeypatch.setattr(postgres.pwd, "getpwnam", no_such_user)
    with pytest.raises(MissingPrerequisite, match="refuses to run as root.*apt-get install postgresql"):
        postgres.unprivileged_prefix()


def test_the_instance_role_signs_in_by_password_to_its_own_database_only(
    postgres_server: PostgresServer,
) -> None:
    assert query(postgres_server, "select rolsuper, rolcreatedb, rolcreaterole from pg_roles where rolname = %s",
                 postgres_server.user) == [(False, False, False)]  # fmt: skip
    assert query(postgres_server, "select pg_get_userbyid(datdba) from pg_database where datname = %s",
                 postgres_server.db) == [(postgres_server.user,)]  # fmt: skip
    for refused in ({"password": "not-the-password"}, {"dbname": "postgres"}, {"dbname": "template1"}):
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(**postgres_server.connection_kwargs(**refused)).close()


def test_the_deployed_config_is_kept_but_for_port_and_compute_logs(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    deployed = yaml.safe_load(DEPLOYED.read_text())
    local = instance_config(postgres_server, tmp_path)
    assert {k for k in deployed if local[k] != deployed[k]} == {"storage", "compute_logs"}
    assert {k: v for k, v in local["storage"]["postgres"]["postgres_db"].items() if k != "port"} == {
        k: v for k, v in deployed["storage"]["postgres"]["postgres_db"].items() if k != "port"
    }


def test_without_the_scheme_line_the_instance_needs_psycopg3(instance_home: Path) -> None:
    """Proves the scheme line is the fix: SQLAlchemy 2.1 maps `postgresql://` to psycopg 3, which the
    locked environment (the image's too) does not have."""
    config = yaml.safe_load((instance_home / "dagster.yaml").read_text())
    del config["storage"]["postgres"]["postgres_db"]["scheme"]
    (instance_home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ModuleNotFoundError) as missing:
        dg.DagsterInstance.from_config(str(instance_home)).dispose()
    assert missing.value.name == "psycopg", (
        "psycopg 3 is installed now; the scheme line is then a choice, not a fix: update this test"
    )


def test_dagster_instance_migrate_runs_against_the_deployed_storage(
    postgres_server: PostgresServer, instance_home: Path
) -> None:
    result = subprocess.run(
        [str(BIN / "dagster"), "instance", "migrate"],
        env=dict(os.environ), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Dagster's tables (and the alembic revision they are at), created by the instance's own role.
    owned = {name for (name,) in query(postgres_server, "select tablename from pg_tables where tableowner = %s",
                                       postgres_server.user)}  # fmt: skip
    assert {"runs", "event_logs", "alembic_version", "daemon_heartbeats", "jobs", "job_ticks"} <= owned
    assert query(postgres_server, "select count(*) from alembic_version") == [(1,)]


def test_a_run_and_its_events_land_in_postgres(
    postgres_server: PostgresServer, instance_home: Path, tmp_path: Path
) -> None:
    spec = importlib.util.spec_from_file_location("tiny_location", location_module(tmp_path))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with dg.DagsterInstance.from_config(str(instance_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        result = module.tiny_job.execute_in_process(instance=instance)
    assert result.success and result.output_for_node("answer") == 42
    run_id = result.run_id
    assert query(postgres_server, "select pipeline_name, status from runs where run_id = %s", run_id) == [
        ("tiny_job", "SUCCESS")
    ]
    stored = query(postgres_server, "select dagster_event_type from event_logs where run_id = %s", run_id)
    kinds = {dg.DagsterEventType.RUN_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.RUN_SUCCESS}
    # The column holds the enum's value (RUN_START's is still "PIPELINE_START").
    assert {kind.value for kind in kinds} <= {kind for (kind,) in stored}


def test_the_daemon_dequeues_a_sensor_run_through_the_deployed_queue(
    postgres_server: PostgresServer, instance_home: Path, tmp_path: Path
) -> None:
    location_module(tmp_path)
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        yaml.safe_dump(
            {"load_from": [{"python_file": {"relative_path": "tiny_location.py", "location_name": "tiny"}}]}
        )
    )
    log = tmp_path / "daemon.log"
    code_servers: list[int] = []
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
            cwd=tmp_path, env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        with dg.DagsterInstance.from_config(str(instance_home)) as instance:
            runs = wait_for_sensor_runs(instance, daemon, log, count=2, timeout_s=120)
            lifecycles = []
            for run in runs:
                kinds = [record.event_log_entry.dagster_event_type
                         for record in instance.get_records_for_run(run.run_id).records]  # fmt: skip
                lifecycles.append([kind for kind in kinds if kind in RUN_LIFECYCLE])
            # Each run either started at submission, or was enqueued and then started by the queue's daemon
            # (its dequeue is the RUN_STARTING event); the one behind the other went through the queue.
            assert all(lc in (RUN_LIFECYCLE, RUN_LIFECYCLE[1:]) for lc in lifecycles), lifecycles
            assert RUN_LIFECYCLE in lifecycles, lifecycles
        # A clean stop: SIGTERM is the daemon's interrupt; it stops its threads, asks the code server it
        # started to shut down, and exits 0. The code server then leaves by itself (a signal sent to it
        # while it shuts down can leave it hanging, so none is sent unless it overstays).
        code_servers = children(daemon.pid)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0, log_tail(log, 60)
        deadline = time.monotonic() + 30
        while any(map(pid_alive, code_servers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(pid_alive, code_servers)), "the code server outlived the daemon by 30 s"
    finally:
        code_servers = children(daemon.pid) if daemon.poll() is None else code_servers
        stop_process(daemon.pid)
        for pid in filter(pid_alive, code_servers):
            os.kill(pid, signal.SIGKILL)
    # The daemons' heartbeats went to Postgres too.
    beating = {kind for (kind,) in query(postgres_server, "select daemon_type from daemon_heartbeats")}
    assert {"SENSOR", "QUEUED_RUN_COORDINATOR"} <= beating


def wait_for_sensor_runs(
    instance: dg.DagsterInstance, daemon: subprocess.Popen, log: Path, count: int, timeout_s: float
) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    runs: list[Any] = []
    while time.monotonic() < deadline:
        assert daemon.poll() is None, f"dagster-daemon exited:\n{log_tail(log, 60)}"
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": "request_once"}))
        failed = [r for r in runs if r.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)]
        if failed:
            pytest.fail(f"a sensor's run ended {failed[0].status}:\n{log_tail(log, 60)}")
        if len(runs) >= count and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs):
            assert len(runs) == count
            return runs
        time.sleep(0.5)
    pytest.fail(f"not {count} successful sensor runs in {timeout_s:.0f} s (runs: {[r.status for r in runs]}):\n"
                f"{log_tail(log, 60)}")  # fmt: skip


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc: the code servers a daemon started)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited while we looked
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found
