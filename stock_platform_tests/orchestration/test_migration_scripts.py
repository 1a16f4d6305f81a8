"""Dagster's migration scripts are read once per process; every database's revision is still read."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dagster as dg
from alembic.script import Script, ScriptDirectory
from dagster._core.storage.sql import check_alembic_revision, get_alembic_config
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from stock_platform.orchestration.migration_scripts import remember_migration_scripts
from stock_platform.runner import prepare_dagster_home


def _scripts_parsed(monkeypatch) -> list[str]:
    """Paths of the migration scripts alembic parses from now on."""
    parsed: list[str] = []
    original = Script._from_path.__func__  # type: ignore[attr-defined]

    def counting(cls, scriptdir, path, **kwargs):
        parsed.append(str(path))
        return original(cls, scriptdir, path, **kwargs)

    monkeypatch.setattr(Script, "_from_path", classmethod(counting))
    return parsed


def test_opening_the_local_instance_again_parses_no_migration_script(tmp_path, monkeypatch) -> None:
    home = tmp_path / "dagster_home"
    prepare_dagster_home(home)  # the local instance config: BatchedSqliteStorage
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
    parsed = _scripts_parsed(monkeypatch)
    for _ in range(3):
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.get_runs(limit=1)
            instance.get_latest_materialization_event(dg.AssetKey("stock_quotes_topic"))
            instance.all_instigator_state()
    assert parsed == []


def test_each_configuration_has_its_own_directory_and_keeps_it() -> None:
    import dagster._core.storage.runs.sqlite.sqlite_run_storage as runs

    remember_migration_scripts()
    remember_migration_scripts()  # idempotent: not wrapped twice
    first = ScriptDirectory.from_config(get_alembic_config(runs.__file__))
    assert ScriptDirectory.from_config(get_alembic_config(runs.__file__)) is first
    other = ScriptDirectory.from_config(
        get_alembic_config(runs.__file__, script_location=str(Path(first.dir)))
    )
    assert other is not first  # another script location, though the same scripts
    assert other.get_current_head() == first.get_current_head()


def _stamped_runs_db(path: Path, revision: str | None) -> str:
    """A runs database whose alembic table says ``revision`` (none: no alembic table)."""
    db = path / "runs.db"
    connection = sqlite3.connect(db)
    if revision is not None:
        connection.execute("create table alembic_version (version_num varchar(32) not null)")
        connection.execute("insert into alembic_version values (?)", [revision])
    connection.commit()
    connection.close()
    return f"sqlite:///{db}"


def test_the_databases_revision_is_read_at_every_check(tmp_path) -> None:
    import dagster._core.storage.runs.sqlite.sqlite_run_storage as module

    remember_migration_scripts()
    config = get_alembic_config(module.__file__)
    head = ScriptDirectory.from_config(config).get_current_head()
    older = ScriptDirectory.from_config(config).get_revision(head).down_revision
    assert isinstance(older, str)

    url = _stamped_runs_db(tmp_path, older)
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        assert check_alembic_revision(config, connection) == (older, head)
    # The same database moved on (another process migrated it): the next check sees it.
    with sqlite3.connect(url.removeprefix("sqlite:///")) as raw:
        raw.execute("update alembic_version set version_num = ?", [head])
    with engine.connect() as connection:
        assert check_alembic_revision(config, connection) == (head, head)

    unstamped = tmp_path / "unstamped"
    unstamped.mkdir()
    with create_engine(_stamped_runs_db(unstamped, None), poolclass=NullPool).connect() as connection:
        assert check_alembic_revision(config, connection) == (None, head)
