"""A local service process: started detached, logged to a file, probed for readiness, stopped cleanly.

The same class serves `stock-platform services up` (state kept in a JSON file so a later `down` or
`status` finds the process) and the test fixtures (started and stopped within one pytest session).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar


class MissingPrerequisite(RuntimeError):
    """A tool the local services need is not installed; the message says what to install."""


class ServiceFailed(RuntimeError):
    """A service process exited or did not become ready; the message includes its log tail."""


def require_tool(name: str, why: str, install: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingPrerequisite(
            f"`{name}` was not found on PATH; it is needed {why}. Install it: {install}"
        )
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) still answers kill(0); read its state.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class ServiceState:
    """What `services status` and `services down` need to find a running service again."""

    name: str
    pid: int
    log: str
    settings: dict[str, str] = field(default_factory=dict)

    def save(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / f"{self.name}.json"
        path.write_text(json.dumps(asdict(self), indent=2))
        # Settings can include the local S3 server's generated secret.
        path.chmod(0o600)

    @classmethod
    def load(cls, state_dir: Path, name: str) -> ServiceState | None:
        path = state_dir / f"{name}.json"
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    @staticmethod
    def remove(state_dir: Path, name: str) -> None:
        (state_dir / f"{name}.json").unlink(missing_ok=True)


def spawn(
    argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen:
    """Start ``argv`` in its own session (so it outlives the CLI and can be stopped as a group)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )


def wait_ready(
    name: str, pid: int, ready: Callable[[], bool], log_path: Path, timeout_s: float, interval_s: float = 0.25
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            raise ServiceFailed(
                f"{name} exited during start-up; last log lines ({log_path}):\n{log_tail(log_path)}"
            )
        if ready():
            return
        time.sleep(interval_s)
    raise ServiceFailed(
        f"{name} was not ready after {timeout_s:.0f} s; last log lines ({log_path}):\n{log_tail(log_path)}"
    )


def group_alive(pgid: int) -> bool:
    """Whether a process of the group is still running (a zombie waiting to be reaped is not)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def stop_process(pid: int, timeout_s: float = 30.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``timeout_s``; reap if it is our child.

    Returns once every process of the group is gone, not only its leader: a daemon's run worker that
    outlives it by a second still holds the warehouse's lock (a test then reading DuckDB failed on it).
    """
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not pid_alive(pid) and not group_alive(pid):
                return
            time.sleep(0.1)


class LocalService:
    """What the local services (Kafka, the S3 server, fakesnow) share: launched detached, probed until
    ready (stopped again when they never get there), stopped, and described for `services status`."""

    name: ClassVar[str]
    pid: int | None

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def settings(self) -> dict[str, str]:
        raise NotImplementedError

    def _launch(
        self, argv: Sequence[str], what: str, ready: Callable[[], bool], timeout_s: float,
        env: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        proc = spawn(argv, self.log_path, env=env)
        self.pid = proc.pid
        try:
            wait_ready(what, proc.pid, ready, self.log_path, timeout_s)
        except ServiceFailed:
            self.stop()
            raise

    def stop(self) -> None:
        if self.pid is not None:
            stop_process(self.pid)
            self.pid = None

    def state(self) -> ServiceState:
        assert self.pid is not None
        return ServiceState(self.name, self.pid, str(self.log_path), self.settings())
