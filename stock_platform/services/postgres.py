"""A real PostgreSQL server on loopback: the storage docker-compose gives Dagster's instance, run locally.

The tests load docker/dagster.yaml's own storage section against it (a SQLite stand-in cannot show that
dagster-postgres connects at all), and `stock-platform run --postgres` can keep its instance there. It is
a throwaway cluster from Debian's server binaries (apt-get install postgresql): initdb into a fresh
temporary folder, one ``postgres`` process on 127.0.0.1 and a free port, and one login role that owns its
database and nothing more; the folder is removed when the server stops.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stock_platform.services.process import (
    LocalService,
    MissingPrerequisite,
    ServiceFailed,
    free_port,
    require_tool,
)

INSTALL = "Debian: apt-get install postgresql"
# Where Debian installs each major version's server binaries (off PATH).
DEBIAN_ROOT = Path("/usr/lib/postgresql")
# initdb's superuser; it has no password, so it can sign in only through the cluster's unix socket.
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; a root session runs it as this (unprivileged) user instead.
SERVICE_USER = "postgres"


def server_bin_dir() -> Path:
    """The folder holding initdb, postgres and pg_ctl: initdb's on PATH, else the newest
    /usr/lib/postgresql/<major>/bin (Debian keeps the server binaries off PATH)."""
    candidates = []
    on_path = shutil.which("initdb")
    if on_path is not None:
        candidates.append(Path(on_path).resolve().parent)  # a symlink's target sits beside `postgres`
    versions = DEBIAN_ROOT.glob("*/bin")
    candidates += sorted(
        versions, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1, reverse=True
    )
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "postgres", "pg_ctl")):
            return folder
    raise MissingPrerequisite(
        "PostgreSQL's server (initdb, postgres, pg_ctl) was found neither on PATH nor under "
        f"{DEBIAN_ROOT}/<version>/bin; it is needed to run a local PostgreSQL for Dagster's instance "
        f"storage. Install it: {INSTALL}"
    )


def unprivileged_prefix() -> tuple[list[str], tuple[int, int] | None]:
    """The argv prefix that runs PostgreSQL's tools as a non-root user, and that user's (uid, gid) for the
    cluster folder; nothing when this process is not root."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise MissingPrerequisite(
            f"PostgreSQL refuses to run as root, and there is no `{SERVICE_USER}` user to run it as. "
            f"Install the server, which creates that user ({INSTALL}), or run as an unprivileged user"
        ) from None
    setpriv = require_tool(
        "setpriv",
        f"to run PostgreSQL as the `{SERVICE_USER}` user when running as root",
        "Debian: apt-get install util-linux",
    )
    # setpriv execs the tool itself (no forking wrapper such as runuser/su), so the pid we track is the
    # postmaster's.
    argv = [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]
    return argv, (user.pw_uid, user.pw_gid)


@dataclass
class PostgresServer(LocalService):
    """A throwaway cluster; ``data_dir`` holds only its log. The cluster itself (data and unix socket)
    lives in a fresh temporary folder: its owner must be able to reach it, which a root session's pytest
    folders (mode 0700) do not allow, and a unix socket's path must stay under ~100 characters."""

    data_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    user: str = "dagster"
    db: str = "dagster"
    # Empty: a fresh one at start-up, never a guessable default.
    password: str = ""
    pid: int | None = None
    cluster_dir: Path | None = field(default=None, init=False)
    _prefix: list[str] = field(default_factory=list, init=False, repr=False)
    _bin_dir: Path | None = field(default=None, init=False, repr=False)

    name = "postgres"

    def __post_init__(self) -> None:
        self.password = self.password or secrets.token_urlsafe(24)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def pgdata(self) -> Path:
        assert self.cluster_dir is not None, "the server is not started"
        return self.cluster_dir / "data"

    def dagster_storage_env(self) -> dict[str, str]:
        """The variables docker/dagster.yaml's storage section reads (it fixes the port: compose's 5432)."""
        return {
            "DAGSTER_POSTGRES_HOST": self.host,
            "DAGSTER_POSTGRES_USER": self.user,
            "DAGSTER_POSTGRES_PASSWORD": self.password,
            "DAGSTER_POSTGRES_DB": self.db,
        }

    def settings(self) -> dict[str, str]:
        # The port too: a local instance config writes it in, where docker/dagster.yaml has compose's.
        return {**self.dagster_storage_env(), "DAGSTER_POSTGRES_PORT": str(self.port)}

    def connection_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``psycopg2.connect`` as the database's owner, over TCP with its password."""
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password,
                "dbname": self.db, "connect_timeout": 5, **overrides}  # fmt: skip

    def _tool(self, name: str) -> list[str]:
        assert self._bin_dir is not None
        return [*self._prefix, str(self._bin_dir / name)]

    def start(self, timeout_s: float = 60.0) -> PostgresServer:
        self._bin_dir = server_bin_dir()
        self._prefix, owner = unprivileged_prefix()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.cluster_dir = Path(tempfile.mkdtemp(prefix="stock-platform-postgres-"))
        try:
            if owner is not None:
                os.chown(self.cluster_dir, *owner)
            # Password sign-in (SCRAM) over TCP; the unix socket trusts whoever reaches it, and only the
            # cluster's owner (and root) can: its folder is mode 0700. --no-sync: the cluster is throwaway.
            initdb = subprocess.run(
                [*self._tool("initdb"), "-D", str(self.pgdata), "-U", SUPERUSER, "--auth-local=trust",
                 "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-locale", "--no-sync"],
                cwd=self.cluster_dir, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if initdb.returncode != 0:
                raise ServiceFailed(f"initdb failed:\n{initdb.stdout[-2000:]}{initdb.stderr[-3000:]}")
            self._launch(
                [*self._tool("postgres"), "-D", str(self.pgdata), "-p", str(self.port),
                 "-c", f"listen_addresses={self.host}", "-c", f"unix_socket_directories={self.cluster_dir}",
                 # Durability buys nothing for a cluster deleted at stop, and costs time on shared cores.
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                "PostgreSQL", self.ready, timeout_s,
            )  # fmt: skip
            self._create_owner_and_database()
        except BaseException:
            self.stop()
            raise
        return self

    def _admin_connection(self) -> Any:
        import psycopg2

        return psycopg2.connect(host=str(self.cluster_dir), port=self.port, user=SUPERUSER, dbname="postgres",
                                connect_timeout=2)  # fmt: skip

    def ready(self) -> bool:
        """Ready means a session opens (the port listens a moment before start-up recovery ends)."""
        import psycopg2

        try:
            self._admin_connection().close()
        except psycopg2.OperationalError:
            return False
        return True

    def _create_owner_and_database(self) -> None:
        """A login role that is not a superuser and may create neither roles nor databases; it owns its
        database (Dagster creates and migrates its tables there), the only one it may connect to."""
        from psycopg2 import sql

        conn = self._admin_connection()
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        try:
            with conn.cursor() as cur:
                role, db = sql.Identifier(self.user), sql.Identifier(self.db)
                cur.execute(
                    sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %s").format(
                        role
                    ),
                    (self.password,),
                )
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(db, role))
                # Every role may connect to every database by default: leave it only its own.
                cur.execute(sql.SQL("REVOKE ALL ON DATABASE {}, postgres, template1 FROM PUBLIC").format(db))
        finally:
            conn.close()

    def stop(self) -> None:
        if self.pid is not None and self.cluster_dir is not None:
            # Fast shutdown, which disconnects clients. stop_process's SIGTERM is PostgreSQL's smart
            # shutdown, which waits for every client to leave: one pooled connection left open in some
            # process would hold the server for stop_process's whole timeout.
            subprocess.run([*self._tool("pg_ctl"), "stop", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "30"],
                           cwd=self.cluster_dir, capture_output=True, check=False)  # fmt: skip
        super().stop()  # reaps the postmaster; stops it the hard way if pg_ctl could not
        if self.cluster_dir is not None:
            shutil.rmtree(self.cluster_dir, ignore_errors=True)
            self.cluster_dir = None
