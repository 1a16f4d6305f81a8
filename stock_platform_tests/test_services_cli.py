"""`stock-platform services up|status|down` as a user runs it: real processes, nothing left behind."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stock_platform.services.manage import add_arguments, port_clash
from stock_platform.services.process import ServiceState, free_port, pid_alive, port_open

pytestmark = pytest.mark.integration


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STOCK_PLATFORM_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "stock_platform.cli", "services", *args],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def kafka_and_s3_ports() -> list[str]:
    """Free ports for Kafka (and its controller on the next port) and the S3 server: two free_port()
    calls can return neighbours, and a clash made one CI run's broker exit at start-up."""
    while True:
        kafka, s3 = free_port(), free_port()
        if s3 not in (kafka, kafka + 1) and not port_open("127.0.0.1", kafka + 1):
            return ["--kafka-port", str(kafka), "--s3-port", str(s3)]


def test_up_prints_settings_status_shows_them_and_down_leaves_no_process(tmp_path):
    ports = kafka_and_s3_ports()
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


@pytest.mark.parametrize(
    ("argv", "names", "clash"),
    [
        (
            ["--kafka-port", "9092", "--s3-port", "9093"],
            ["kafka", "s3"],
            "--s3-port and the Kafka controller's",
        ),
        (["--kafka-port", "7070"], ["kafka", "s3"], "--s3-port and --kafka-port are both 7070"),
        (["--s3-port", "8085"], ["s3", "fakesnow"], "--fakesnow-port and --s3-port are both 8085"),
        (["--s3-port", "9093"], ["s3"], None),  # Kafka is not started: its ports are free to take
        ([], ["kafka", "s3", "fakesnow"], None),  # the defaults
    ],
)
def test_clashing_ports_are_refused_before_anything_starts(argv, names, clash, tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["up", *names, *argv])
    message = port_clash(args.names, args)
    assert (message is None) if clash is None else (message is not None and clash in message)
    if clash is not None:
        refused = _cli(tmp_path, "up", *names, *argv)
        assert refused.returncode == 2 and clash in refused.stdout
        assert not (tmp_path / "services").exists(), "nothing was started"
