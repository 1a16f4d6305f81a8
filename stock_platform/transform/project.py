"""The dbt project as Dagster loads it, with its manifest built when the checkout has none or an old one.

No `target/` is committed, so a fresh clone (or a test run) must be able to build the manifest itself.
`dbt parse` costs a few seconds, so it runs only when the manifest is missing or older than a file dbt
reads; run workers that import the code location after it was prepared find it fresh and skip it.
"""

from __future__ import annotations

import fcntl
import sys
from collections.abc import Iterable
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"
_SOURCE_DIRS = ("models", "macros", "tests")
_SOURCE_FILES = ("dbt_project.yml", "profiles.yml", "packages.yml", "dependencies.yml")


def dbt_executable() -> str:
    """The dbt installed beside this Python (a venv's bin/), else whatever `dbt` is on PATH.

    dagster dev or a test run from an un-activated venv has no `dbt` on PATH.
    """
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else "dbt"


def dbt_cli_resource(project: DbtProject) -> DbtCliResource:
    return DbtCliResource(project_dir=project, dbt_executable=dbt_executable())


def dbt_project(project_dir: Path = DBT_PROJECT_DIR) -> DbtProject:
    # profiles.yml lives in the project (credentials come from env_var() in it), and the target
    # defaults to DuckDB unless DBT_TARGET says otherwise; dbt reads that, not this module.
    return DbtProject(project_dir=project_dir, profiles_dir=project_dir)


def dbt_source_files(project_dir: Path) -> Iterable[Path]:
    """Every file whose change can change the manifest."""
    for name in _SOURCE_FILES:
        path = project_dir / name
        if path.exists():
            yield path
    for folder in _SOURCE_DIRS:
        yield from (p for p in (project_dir / folder).rglob("*") if p.is_file())


def manifest_is_stale(manifest_path: Path, source_files: Iterable[Path]) -> bool:
    """True when the manifest is missing or any source file was modified after it was written."""
    if not manifest_path.exists():
        return True
    built = manifest_path.stat().st_mtime
    return any(path.stat().st_mtime > built for path in source_files)


def prepare_dbt_project(project: DbtProject) -> DbtProject:
    """Parse the project when its manifest is missing or stale."""
    if manifest_is_stale(project.manifest_path, dbt_source_files(Path(project.project_dir))):
        parse_project(project)
    return project


def parse_project(project: DbtProject) -> None:
    """`dbt parse`, writing target/manifest.json (and partial_parse.msgpack, which later runs reuse).

    A lock keeps processes that load the code location at the same time (webserver, daemon, tests) from
    writing the manifest over each other; the second one re-checks and finds it fresh.
    """
    target = Path(project.project_dir) / project.target_path
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".parse.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if manifest_is_stale(project.manifest_path, dbt_source_files(Path(project.project_dir))):
                dbt_cli_resource(project).cli(["parse", "--quiet"], target_path=project.target_path).wait()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
