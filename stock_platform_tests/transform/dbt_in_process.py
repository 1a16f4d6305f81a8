"""dbt in the test process (dbtRunner) with a manifest parsed once per warehouse.

A dbt subprocess pays interpreter start-up, imports and parsing on every call (5-8 s here); in process, with
the manifest reused, a run of the five models over a few hundred quotes takes about half a second on
DuckDB. The window goes in through the environment, as the Dagster asset passes it
(stock_platform.transform.window), which a reused manifest reads at compile time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stock_platform.transform.dbt_runner import failures, forget_compiled_sql
from stock_platform.transform.project import DBT_PROJECT_DIR
from stock_platform.transform.window import WINDOW_ENV, dbt_window_env, environment


class DbtInProcess:
    """One warehouse target (``env``: DBT_TARGET and its connection variables), parsed once."""

    def __init__(self, env: Mapping[str, str], work: Path) -> None:
        from dbt.cli.main import dbtRunner  # noqa: PLC0415 (seconds of imports, only for the tests using it)

        # No window unless a run gives one: an empty value is "unset" for the models.
        self.env = {**env, **dict.fromkeys(WINDOW_ENV.values(), "")}
        self.common = [
            "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
            "--target-path", str(work / "target"), "--log-path", str(work / "logs"), "--quiet",
        ]  # fmt: skip
        with environment(self.env):
            parsed = dbtRunner().invoke(["parse", *self.common])
        if not parsed.success:
            raise RuntimeError(f"dbt parse failed: {parsed.exception}")
        self.manifest = parsed.result
        self.runner = dbtRunner(manifest=self.manifest)

    def invoke(
        self, *args: str, window: tuple[dt.datetime, dt.datetime] | None = None, check: bool = True
    ) -> Any:
        """``dbt <args>`` over the raw minutes [start, end) of ``window`` (None: no window); with ``check``,
        raises with the failing nodes' messages unless every node succeeded (warnings pass)."""
        env = dict(self.env)
        if window is not None:
            env.update(dbt_window_env(*window))
        forget_compiled_sql(self.manifest)
        with environment(env):
            result = self.runner.invoke([*args, *self.common])
        if check and not result.success:
            raise AssertionError(f"dbt {' '.join(args)} failed: {result.exception or failures(result)}")
        return result.result
