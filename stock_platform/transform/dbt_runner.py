"""dbt in the run's own process, with the project parsed once per process.

dagster-dbt's ``DbtCliResource.cli`` costs every run three dbt start-ups before a model is built: a
``dbt --version`` subprocess, an adapter handle made in the run's process, and the ``dbt build``
subprocess, which imports dbt again and re-parsed the project because the run's profile environment
differs from the one the saved manifest was parsed with (~12 s of a ~21 s step, measured with
benchmarks/freshness.py). Here dbt's own programmatic entry point (``dbtRunner``) builds the models with
a manifest parsed once in the process (or inherited already parsed from a warm run host,
stock_platform/orchestration/run_host.py), and dagster-dbt's own event conversion turns dbt's result
events into the same outputs, asset checks and metadata as its CLI path, so lineage, checks and the UI
are unchanged.

The window reaches the models through the environment (transform/window.py): ``env_var()`` in a model is
rendered when dbt compiles the node at run time, so a manifest parsed without a window serves any window.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator

from stock_platform.transform.project import DBT_PROJECT_DIR, dbt_source_files
from stock_platform.transform.window import WINDOW_ENV, environment

if TYPE_CHECKING:
    from dbt.contracts.graph.manifest import Manifest

# Its own target folder: the code location's `dbt parse` (project.py) writes target/ with the loading
# process's profile environment; runs parse here with theirs, so dbt's partial parsing stays valid.
IN_PROCESS_TARGET = Path("target") / "in_process"
# An empty value is "no window" for the models; a parse never needs one.
_NO_WINDOW = dict.fromkeys(WINDOW_ENV.values(), "")
# dagster-dbt's variable for how tests attached to unselected models are chosen (dbt reads it).
DBT_INDIRECT_SELECTION_ENV = "DBT_INDIRECT_SELECTION"
# dbt's flags and adapter registry are process-global: one invocation at a time per process.
_INVOKE_LOCK = threading.Lock()


class DbtRunFailed(dg.Failure):
    """A dbt invocation ended unsuccessfully (a model error or an error-severity test failure)."""


@dataclass
class ParsedProject:
    """A dbt Manifest object, the JSON form dagster-dbt reads, and when they were parsed."""

    manifest: Manifest
    manifest_dict: dict[str, Any]
    parsed_at: float


_parsed: dict[tuple[str, ...], ParsedProject] = {}


def _common_args(project_dir: Path) -> list[str]:
    # No JSON artifacts: nothing reads them (dagster-dbt takes the results from the events), and writing
    # manifest.json cost ~0.2 s of every build.
    target = project_dir / IN_PROCESS_TARGET
    return [
        "--project-dir", str(project_dir), "--profiles-dir", str(project_dir),
        "--target-path", str(target), "--log-path", str(target), "--no-write-json",
    ]  # fmt: skip


def _cache_key(project_dir: Path) -> tuple[str, ...]:
    # What the parse depends on besides the files: the target and its connection settings (a node's
    # database is the profile's at parse time).
    names = sorted(
        n
        for n in os.environ
        if n.startswith(("DBT_", "DUCKDB_", "SNOWFLAKE_")) and n != DBT_INDIRECT_SELECTION_ENV
    )
    return (str(project_dir), *(f"{n}={os.environ[n]}" for n in names))


def _newest_source(project_dir: Path) -> float:
    return max((p.stat().st_mtime for p in dbt_source_files(project_dir)), default=0.0)


def parsed_project(project_dir: Path = DBT_PROJECT_DIR) -> ParsedProject:
    """The project parsed in this process, parsed again only when a dbt file or the profile's
    environment changed since."""
    key = _cache_key(project_dir)
    cached = _parsed.get(key)
    if cached is not None and _newest_source(project_dir) <= cached.parsed_at:
        return cached
    _parsed[key] = _parse(project_dir)
    return _parsed[key]


def _parse(project_dir: Path) -> ParsedProject:
    from dbt.cli.main import dbtRunner  # noqa: PLC0415 (seconds of imports; only processes that run dbt pay)
    from dbt.contracts.graph.manifest import Manifest  # noqa: PLC0415

    target = project_dir / IN_PROCESS_TARGET
    target.mkdir(parents=True, exist_ok=True)
    started = _newest_source(project_dir)
    # One parser at a time writes partial_parse.msgpack (runs of two processes may start together).
    with open(target / ".parse.lock", "w") as lock, _INVOKE_LOCK, environment(_NO_WINDOW):
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = dbtRunner().invoke(["parse", "--quiet", *_common_args(project_dir)])
    if not result.success:
        raise DbtRunFailed(f"dbt could not parse {project_dir}: {result.exception}")
    manifest = result.result
    if not isinstance(manifest, Manifest):
        raise DbtRunFailed(f"dbt parse of {project_dir} returned {type(manifest).__name__}, not a Manifest")
    return ParsedProject(manifest, manifest.writable_manifest().to_dict(), started)


# What dbt imports on its first build in a process (~0.2-0.3 s here, measured); a warm run host imports it
# once for all its runs. Adapter modules that are not installed are skipped.
_BUILD_MODULES = (
    "dbt.task.build", "dbt.compilation", "dbt.runners", "dbt.parser.sql", "dbt_common.clients.agate_helper",
    "sqlparse", "daff", "babel.dates", "multiprocessing.pool", "dbt.adapters.duckdb.environments.local",
)  # fmt: skip


def warm(project_dir: Path = DBT_PROJECT_DIR) -> None:
    """Parse the project and import what a build needs, so that processes forked from this one start
    their dbt build at once (stock_platform/orchestration/run_host.py)."""
    parsed_project(project_dir)
    for name in _BUILD_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def forget_compiled_sql(manifest: Manifest) -> None:
    """Clear what an invocation compiled into a reused manifest.

    dbt marks a compiled node as having its ephemeral models' CTEs injected; the next compile of the node
    renders its SQL afresh but skips the injection, so silver would read a CTE of stg_raw_quotes that is
    not there. A dbt subprocess starts from a fresh manifest every time; a reused one must be reset.
    """
    node: Any  # the compiled node kinds; seeds have no compiled state
    for node in manifest.nodes.values():
        if hasattr(node, "extra_ctes_injected"):
            node.compiled = False
            node.compiled_code = None
            node.extra_ctes_injected = False
            node.extra_ctes = []


def invoke(
    args: Sequence[str], project_dir: Path = DBT_PROJECT_DIR, env: Mapping[str, str] | None = None
) -> tuple[Any, list[dict[str, Any]]]:
    """``dbt <args>`` in this process on the parsed project: dbt's ``dbtRunnerResult`` and its node
    result events in their JSON-log form (what dagster-dbt reads from the CLI's output).

    ``env`` is set for the invocation only (the window, or a test's warehouse).
    """
    from dbt.adapters.factory import cleanup_connections  # noqa: PLC0415
    from dbt.cli.main import dbtRunner  # noqa: PLC0415
    from dbt_common.events.functions import msg_to_dict  # noqa: PLC0415

    with environment({**_NO_WINDOW, **(env or {})}):
        project = parsed_project(project_dir)
        events: list[dict[str, Any]] = []

        def keep_result(msg: Any) -> None:
            if msg.info.name in _RESULT_EVENTS:
                events.append(msg_to_dict(msg))

        with _INVOKE_LOCK:
            forget_compiled_sql(project.manifest)
            runner = dbtRunner(manifest=project.manifest, callbacks=[keep_result])
            try:
                result = runner.invoke([*args, *_common_args(project_dir)])
            finally:
                cleanup_connections()
                release_duckdb()
    return result, events


def release_duckdb() -> None:
    """Close the DuckDB database dbt-duckdb keeps open for the process (a class attribute that outlives
    the invocation): the file is writable by one process at a time, and the next run (or this run's
    next step) must be able to open it."""
    connections = sys.modules.get("dbt.adapters.duckdb.connections")
    if connections is None:
        return
    manager = connections.DuckDBConnectionManager
    with manager._LOCK:
        if manager._ENV is not None:
            manager._ENV.close()
            manager._ENV = None


# dbt's events that carry a node's result (dagster-dbt's DbtCoreCliEventMessage.is_result_event).
_RESULT_EVENTS = frozenset({"LogSeedResult", "LogModelResult", "LogSnapshotResult", "LogTestResult"})


def failures(result: Any) -> list[str]:
    """``name: status: message`` of each node that errored or failed."""
    return [
        f"{r.node.name}: {r.status}: {r.message}"
        for r in getattr(result.result, "results", None) or []
        if str(r.status) in ("error", "fail", "runtime error")
    ]


def build_events(
    context: dg.AssetExecutionContext,
    args: Sequence[str],
    translator: DagsterDbtTranslator,
    env: Mapping[str, str] | None = None,
    project_dir: Path = DBT_PROJECT_DIR,
) -> Iterator[Any]:
    """Run ``dbt <args>`` for the context's selected assets and checks; yield what dagster-dbt's
    ``DbtCliInvocation.stream()`` would: an Output per model, an AssetCheckResult per test. Raises
    :class:`DbtRunFailed` after the events when dbt did not succeed, as dagster-dbt does.
    """
    from dagster_dbt.asset_utils import (  # noqa: PLC0415
        DAGSTER_DBT_EXCLUDE_METADATA_KEY,
        DAGSTER_DBT_SELECT_METADATA_KEY,
        DAGSTER_DBT_SELECTOR_METADATA_KEY,
        get_subset_selection_for_context,
    )
    from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage  # noqa: PLC0415

    manifest_dict = parsed_project(project_dir).manifest_dict
    op_tags = context.op_execution_context.op.tags
    selection, indirect = get_subset_selection_for_context(
        context=context,
        manifest=manifest_dict,
        select=op_tags.get(DAGSTER_DBT_SELECT_METADATA_KEY),
        exclude=op_tags.get(DAGSTER_DBT_EXCLUDE_METADATA_KEY),
        selector=op_tags.get(DAGSTER_DBT_SELECTOR_METADATA_KEY),
        dagster_dbt_translator=translator,
        current_dbt_indirect_selection_env=os.getenv(DBT_INDIRECT_SELECTION_ENV),
    )
    run_env = {**(env or {}), **({DBT_INDIRECT_SELECTION_ENV: indirect} if indirect else {})}
    result, events = invoke([*args, *selection], project_dir, run_env)
    for raw in events:
        event = DbtCoreCliEventMessage(raw_event=raw, event_history_metadata={})
        yield from event.to_default_asset_events(
            manifest=manifest_dict, dagster_dbt_translator=translator, context=context
        )
    if not result.success:
        reasons = failures(result) or [str(result.exception)]
        raise DbtRunFailed(f"dbt {' '.join(args)} did not succeed: " + "; ".join(reasons))
