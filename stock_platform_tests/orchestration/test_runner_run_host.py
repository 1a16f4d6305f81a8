"""`stock-platform run`'s warm run host, started ahead of `dagster dev` (runner.Platform.start_run_host).

A real host process on a real local instance written by prepare_dagster_home: it waits on its socket,
its end is not taken for a platform failure, and stopping the platform stops it and the runs it forked.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import pytest

from stock_platform import runner
from stock_platform.orchestration.warm_launcher import (
    AttachedRunHost,
    WarmRunLauncher,
    pid_alive,
    run_host_socket,
)

pytestmark = pytest.mark.slow  # the host loads the code location (~10 s)


def wait_for(condition, timeout_s: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_platform_starts_the_host_ahead_and_stops_it_with_the_rest(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    runner.prepare_dagster_home(home)
    platform = runner.Platform(tmp_path / "logs", {**os.environ, "DAGSTER_HOME": str(home)})
    platform.start_run_host(home)
    host = platform.companions["run host"]
    socket_path = run_host_socket(home)
    wait_for(socket_path.exists, 10, "the host did not bind its socket")

    with dg.DagsterInstance.from_config(str(home)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, WarmRunLauncher)
        taken = launcher._attach()
        assert isinstance(taken, AttachedRunHost) and taken.pid == host.pid
        assert taken.ready["problems"] == [], "the host loaded the code location and parsed dbt"
        assert platform.exited() is None
        taken.stop()  # a launcher that lets the host go (it replaced it): the host ends ...
        host.wait(20)
    assert platform.exited() is None, "... and its end is not a failure of the platform"

    platform.start_run_host(home)  # a second start, as after a restart: a new host, stopped with the rest
    second = platform.companions["run host"]
    wait_for(socket_path.exists, 10, "the second host did not bind its socket")
    platform.stop_all()
    assert not pid_alive(second.pid) and platform.companions == {}
    wait_for(lambda: not socket_path.exists(), 10, "the stopped host's socket was left behind")


def test_no_host_is_started_ahead_for_an_instance_with_another_launcher(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    platform = runner.Platform(tmp_path / "logs", dict(os.environ))
    platform.start_run_host(home)
    assert platform.companions == {}
    assert not run_host_socket(home).exists()
