"""Partition time window → the dbt vars, environment and arguments of an incremental run.

The models read the window from vars `min_minute` / `max_minute`, or else from the environment variables
below. Dagster uses the environment: dbt re-parses the whole project whenever `--vars` change (every
minute), but only the files that read an environment variable when that one changes, which saves about a
second of every per-minute run (benchmarks/dbt_incremental.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator, Mapping

VAR_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
WINDOW_ENV = {"min_minute": "STOCK_PLATFORM_DBT_MIN_MINUTE", "max_minute": "STOCK_PLATFORM_DBT_MAX_MINUTE"}
# Every model and its data tests; unit tests are left to CI: they check the SQL, not the data, and would
# add seconds to every minute.
DBT_BUILD_ARGS = ["build", "--exclude-resource-type", "unit_test"]


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def dbt_window_vars(start: dt.datetime, end: dt.datetime) -> dict[str, str]:
    """dbt vars for the minutes [start, end): naive-UTC strings, as the models' timestamps are."""
    if end <= start:
        raise ValueError(f"empty window: {start.isoformat()} .. {end.isoformat()}")
    return {
        "min_minute": _naive_utc(start).strftime(VAR_TIME_FORMAT),
        "max_minute": _naive_utc(end).strftime(VAR_TIME_FORMAT),
    }


def dbt_window_env(start: dt.datetime, end: dt.datetime) -> dict[str, str]:
    """The window as the environment variables the models read when no vars are given."""
    return {WINDOW_ENV[name]: value for name, value in dbt_window_vars(start, end).items()}


def dbt_build_args(start: dt.datetime, end: dt.datetime) -> list[str]:
    """`dbt build` for one window passed as `--vars` (for a person at a shell; Dagster uses the env)."""
    return [*DBT_BUILD_ARGS, "--vars", json.dumps(dbt_window_vars(start, end), separators=(",", ":"))]


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, restoring what was there before.

    dagster-dbt gives the dbt subprocess a copy of os.environ taken when the invocation starts, and has no
    per-invocation env; a run's steps run one at a time in a process, so this is not shared.
    """
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
