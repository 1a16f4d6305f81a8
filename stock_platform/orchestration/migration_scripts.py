"""Dagster's schema migration scripts, read once per process instead of once per storage opened.

Every time a process opens a Dagster instance on SQLite, each storage (runs, schedules, the event log's
index shard and every run shard it touches) asks alembic for the head revision to compare with the
database's. Alembic answers by importing every migration script of Dagster's package again (~60 Python
files): ~25 ms a storage, ~80 ms an instance. The code server opens a new instance for every sensor tick
(Dagster builds one per evaluation from the instance ref), so the lag sensor paid ~80 ms of its ~220 ms
ticks for it, every 5 s, and a 24 h catch-up ~3 s of the code server's CPU beside the runs (py-spy,
docs/benchmarks.md).

The scripts belong to the installed Dagster package: they cannot change while a process runs (a
reinstall needs a restart anyway). So the parsed script directory is kept per configuration and handed
out again; the database's own revision is still read on every check, as before.
"""

from __future__ import annotations

import threading
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory

_MARK = "_stock_platform_remembers"
_lock = threading.Lock()
_loaded: dict[tuple[Any, ...], ScriptDirectory] = {}


def _key(config: Config) -> tuple[Any, ...]:
    return (
        config.config_file_name,
        config.get_main_option("script_location"),
        tuple(config.get_version_locations_list() or ()),
    )


def remember_migration_scripts() -> None:
    """Make ``ScriptDirectory.from_config`` return the directory it built before for the same
    configuration (idempotent; for the whole process)."""
    if getattr(ScriptDirectory.from_config, _MARK, False):
        return
    build = ScriptDirectory.from_config.__func__  # type: ignore[attr-defined]

    def from_config(cls: type[ScriptDirectory], config: Config) -> ScriptDirectory:
        key = (cls, *_key(config))
        with _lock:
            script = _loaded.get(key)
            if script is None:
                script = _loaded[key] = build(cls, config)
        return script

    setattr(from_config, _MARK, True)
    ScriptDirectory.from_config = classmethod(from_config)  # type: ignore[method-assign,assignment]
