"""`stock-platform services up|status|down` as a user runs it: real processes, nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stock_platform.services.process import ServiceState, free_port, pid_alive

pytestmark = pytest.mark.integration


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STOCK_PLATFORM_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "stock_platform.cli", "services", *args],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def test_up_prints_settings_status_shows_them_and_down_leaves_no_process(tmp_path):
    ports = ["--kafka-port", str(free_port()), "--s3-port", str(free_port())]
    up = _cli(tmp_path, "up", *ports)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        kafka = ServiceState.load(tmp_path / "services", "kafka")
        s3 = ServiceState.load(tmp_path / "services", "s3")
        assert kafka is not None and s3 is not None
        assert f"export KAFKA_BOOTSTRAP_SERVERS={kafka.settings['KAFKA_BOOTSTRAP_SERVERS']}" in up.stdout
        assert f"export S3_ENDPOINT={s3.settings['S3_ENDPOINT']}" in up.stdout
        assert pid_alive(kafka.pid) and pid_alive(s3.pid)

        status = _cli(tmp_path, "status")
        assert status.returncode == 0
        assert "kafka     running" in status.stdout and "s3        running" in status.stdout
        # status is safe to paste into a ticket: it never shows the S3 secret.
        assert s3.settings["S3_SECRET_KEY"] not in status.stdout

        again = _cli(tmp_path, "up", *ports)
        assert again.returncode == 0
        assert f"kafka already running (pid {kafka.pid})" in again.stdout
    finally:
        down = _cli(tmp_path, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not pid_alive(kafka.pid) and not pid_alive(s3.pid)
    assert _cli(tmp_path, "status").returncode == 3


def test_unknown_service_is_refused_with_the_choices(tmp_path):
    result = _cli(tmp_path, "up", "zookeeper")
    assert result.returncode == 2
    assert "unknown service(s) zookeeper; choose from kafka, s3, fakesnow" in result.stdout
