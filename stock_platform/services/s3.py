"""A real S3-compatible server on loopback, standing in for MinIO where no Docker engine runs.

MinIO's server is no longer distributed as binaries. versitygw (Apache-2.0) is a single Go binary
whose posix backend serves a folder over the S3 API with SigV4 credentials enforced; `go install`
builds it from the Go module proxy, and it is cached by version.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stock_platform.services.paths import cache_dir
from stock_platform.services.process import (
    LocalService,
    ServiceFailed,
    free_port,
    port_open,
    require_tool,
)
from stock_platform.settings import load_settings

VERSITYGW_MODULE = "github.com/versity/versitygw/cmd/versitygw"
VERSITYGW_VERSION = "v1.8.0"


def resolve_binary(version: str = VERSITYGW_VERSION) -> Path:
    binary = cache_dir() / f"versitygw-{version}" / "versitygw"
    if binary.exists():
        return binary
    go = require_tool(
        "go",
        "to build the local S3 server (versitygw)",
        "https://go.dev/doc/install or apt-get install golang",
    )
    staging = binary.parent.with_name(f"versitygw-{version}.partial-{os.getpid()}")
    staging.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [go, "install", f"{VERSITYGW_MODULE}@{version}"],
        env={**os.environ, "GOBIN": str(staging)}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise ServiceFailed(f"`go install {VERSITYGW_MODULE}@{version}` failed:\n{result.stderr[-3000:]}")
    binary.parent.mkdir(parents=True, exist_ok=True)
    (staging / "versitygw").rename(binary)
    staging.rmdir()
    return binary


def _configured_keys() -> tuple[str, str]:
    settings = load_settings()
    if settings.s3_secret_key is None:
        return "local-" + secrets.token_hex(6), secrets.token_urlsafe(24)
    return settings.s3_access_key, settings.s3_secret_key.get_secret_value()


@dataclass
class S3Server(LocalService):
    """versitygw's posix gateway serving ``data_dir / "buckets"``; one root user with the given keys."""

    data_dir: Path
    port: int = 0
    # The pipeline's keys when S3_SECRET_KEY is set, so a server started for it accepts its settings;
    # else fresh ones, never a guessable default. Empty: filled in from one read of the settings.
    access_key: str = ""
    secret_key: str = ""
    pid: int | None = None

    name = "s3"

    def __post_init__(self) -> None:
        if not (self.access_key and self.secret_key):
            access_key, secret_key = _configured_keys()
            self.access_key, self.secret_key = self.access_key or access_key, self.secret_key or secret_key

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "versitygw.log"

    def settings(self) -> dict[str, str]:
        return {"S3_ENDPOINT": self.endpoint, "S3_ACCESS_KEY": self.access_key, "S3_SECRET_KEY": self.secret_key,
                "S3_SECURE": "false"}  # fmt: skip

    def start(self, timeout_s: float = 30.0) -> S3Server:
        binary = resolve_binary()
        buckets = self.data_dir / "buckets"
        buckets.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        # Credentials go through the environment, not argv, so `ps` does not show them.
        env = {**os.environ, "ROOT_ACCESS_KEY": self.access_key, "ROOT_SECRET_KEY": self.secret_key}
        self._launch(
            [str(binary), "--port", self.endpoint, "--quiet", "posix", str(buckets)],
            "S3 server (versitygw)",
            lambda: port_open("127.0.0.1", self.port),
            timeout_s,
            env=env,
        )
        return self
