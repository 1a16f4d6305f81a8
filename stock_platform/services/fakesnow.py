"""fakesnow's server mode: a Snowflake stand-in that the real connector and dbt-snowflake reach over HTTP.

Run as its own process (not a thread of the test process) so dbt subprocesses and the Dagster daemon
can talk to it too, exactly as they would to Snowflake.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stock_platform.services.process import (
    LocalService,
    free_port,
    port_open,
)


@dataclass
class FakesnowServer(LocalService):
    data_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    pid: int | None = None

    name = "fakesnow"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "fakesnow.log"

    def connection_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``snowflake.connector.connect`` (fakesnow accepts any credentials)."""
        return {
            "user": "fake",
            "password": "snow",
            "account": "fakesnow",
            "host": self.host,
            "port": self.port,
            "protocol": "http",
            "session_parameters": {"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
            "network_timeout": 30,
            **overrides,
        }

    def settings(self) -> dict[str, str]:
        return {"FAKESNOW_HOST": self.host, "FAKESNOW_PORT": str(self.port)}

    def start(self, timeout_s: float = 60.0) -> FakesnowServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        db_path = self.data_dir / "databases"
        argv = [
            sys.executable,
            "-m",
            "fakesnow",
            "-s",
            "--host",
            self.host,
            "-p",
            str(self.port),
            "-d",
            str(db_path),
        ]
        self._launch(argv, "fakesnow server", lambda: port_open(self.host, self.port), timeout_s)
        return self
