"""dbt in the run's process (stock_platform/transform/dbt_runner.py): a failing build fails the step with
dbt's reasons, the warehouse file is free for other processes afterwards, and the parsed project is
reused until a dbt file changes.

The conversion of dbt's results into outputs and asset checks is exercised on a real build in
test_dbt_models.py (31 checks, a warning with its failed row count).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import dagster as dg
import duckdb
import pytest

from stock_platform.partitions import minute_key
from stock_platform.transform import dbt_runner
from stock_platform.transform.definitions import dbt_model_assets
from stock_platform.transform.project import DBT_PROJECT_DIR
from stock_platform_tests.recent import YESTERDAY

pytestmark = pytest.mark.slow  # dbt parses the project (seconds)

MINUTE = minute_key(YESTERDAY + dt.timedelta(hours=10))


def test_a_failing_build_fails_the_step_naming_the_model_and_frees_the_warehouse(tmp_path, monkeypatch):
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()  # a warehouse without the raw table: silver cannot build
    monkeypatch.setenv("DUCKDB_PATH", str(path))
    monkeypatch.setenv("DBT_TARGET", "duckdb")

    result = dg.materialize([dbt_model_assets[0]], partition_key=MINUTE, raise_on_error=False)

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.error.to_string()
    assert "DbtRunFailed" in message and "silver_quotes: error" in message
    # Another process can write the file: dbt-duckdb's process-wide database handle was closed.
    opened = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import duckdb; duckdb.connect({str(path)!r}).execute('create table t(x int)')",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert opened.returncode == 0, opened.stderr


def test_the_project_is_parsed_once_until_a_dbt_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("DUCKDB_PATH", str(tmp_path / "w.duckdb"))
    first = dbt_runner.parsed_project()
    assert dbt_runner.parsed_project() is first

    model = next((DBT_PROJECT_DIR / "models").rglob("*.sql"))
    stat = model.stat()
    try:
        os.utime(model, (stat.st_atime, first.parsed_at + 5))
        again = dbt_runner.parsed_project()
    finally:
        os.utime(model, (stat.st_atime, stat.st_mtime))
    assert again is not first and again.manifest.nodes.keys() == first.manifest.nodes.keys()
    # A different warehouse is a different parse (a node's database is the profile's at parse time).
    monkeypatch.setenv("DUCKDB_PATH", str(tmp_path / "other.duckdb"))
    assert dbt_runner.parsed_project() is not again


def test_failures_lists_the_nodes_that_errored_or_failed():
    class Node:
        def __init__(self, name: str) -> None:
            self.name = name

    class Result:
        def __init__(self, name: str, status: str, message: str) -> None:
            self.node, self.status, self.message = Node(name), status, message

    class Outcome:
        result = type(
            "R",
            (),
            {
                "results": [
                    Result("a", "success", "ok"),
                    Result("b", "error", "boom"),
                    Result("c", "fail", "3 rows"),
                    Result("d", "warn", "1 row"),
                ]
            },
        )

    assert dbt_runner.failures(Outcome()) == ["b: error: boom", "c: fail: 3 rows"]
