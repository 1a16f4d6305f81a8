"""`stock-platform dashboard` as a subprocess for the browser tests and the benchmark: started on a free
port with its settings in the environment, awaited until Streamlit's health endpoint answers, and
stopped (its whole process group) on exit.

No Kafka is needed: KAFKA_BOOTSTRAP_SERVERS points at a local port nothing listens on, so the health
strip shows "—" and why for the Kafka figures, and everything else works.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stock_platform.services.paths import PROJECT_ROOT
from stock_platform.services.process import free_port, log_tail, spawn, stop_process

START_TIMEOUT_S = 60.0


class DashboardFailed(RuntimeError):
    """The dashboard process exited or did not answer its health check in time; includes its log tail."""


@dataclass(frozen=True)
class Dashboard:
    url: str  # http://127.0.0.1:<port>
    pid: int
    log: Path


def dashboard_env(
    warehouse: Path, refresh_seconds: float = 1.0, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """This process's environment plus the dashboard's settings for a DuckDB ``warehouse``."""
    return {
        **os.environ,
        "WAREHOUSE": "duckdb",
        "DBT_TARGET": "duckdb",
        "DUCKDB_PATH": str(warehouse),
        "STOCK_PLATFORM_HOME": str(warehouse.parent / "stock_platform_home"),
        "DASHBOARD_REFRESH_SECONDS": f"{refresh_seconds:g}",
        # Nothing listens there: the Kafka figures fail fast (connection refused) and say so.
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "DAGSTER_UI_URL": "http://127.0.0.1:3000",
        **(extra or {}),
    }


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200 and response.read().decode().strip() == "ok"
    except (OSError, urllib.error.URLError):
        return False


@contextmanager
def running_dashboard(
    warehouse: Path,
    log: Path,
    refresh_seconds: float = 1.0,
    extra_env: Mapping[str, str] | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> Iterator[Dashboard]:
    """`stock-platform dashboard --port <free port>` reading ``warehouse``'s gold snapshot; yields it once
    /_stcore/health answers "ok"; raises DashboardFailed (with the log tail) if it exits or is not ready
    in ``timeout_s``."""
    port = free_port()
    process: subprocess.Popen = spawn(
        [sys.executable, "-m", "stock_platform.cli", "dashboard", "--port", str(port)],
        log,
        env=dashboard_env(warehouse, refresh_seconds, extra_env),
        cwd=PROJECT_ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while not healthy(url):
            if process.poll() is not None:
                raise DashboardFailed(
                    f"the dashboard exited with {process.returncode} during start-up; last log lines "
                    f"({log}):\n{log_tail(log, 60)}"
                )
            if time.monotonic() > deadline:
                raise DashboardFailed(
                    f"the dashboard did not answer {url}/_stcore/health in {timeout_s:.0f} s; last log "
                    f"lines ({log}):\n{log_tail(log, 60)}"
                )
            time.sleep(0.25)
        yield Dashboard(url, process.pid, log)
    finally:
        stop_process(process.pid)
        if process.poll() is None:
            process.wait(timeout=10)
