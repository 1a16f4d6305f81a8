"""Jobs for test_warm_launcher.py, imported by the warm run host (its ``preload``) and by the test.

Importing this module appends the importing process's pid to the file named by WARM_JOBS_IMPORTS, so the
test can tell which processes paid the import: the host once, never a run's child.
"""

from __future__ import annotations

import os
import time

import dagster as dg

if os.environ.get("WARM_JOBS_IMPORTS"):
    with open(os.environ["WARM_JOBS_IMPORTS"], "a") as imports:
        imports.write(f"{os.getpid()}\n")


@dg.op
def report_pid(context) -> None:  # noqa: ANN001 (Dagster reads the annotation, which must not be a string)
    context.log.info(f"worker pid {os.getpid()}")


@dg.op
def fail() -> None:
    raise RuntimeError("this op fails on purpose")


@dg.op
def sleep_long() -> None:
    time.sleep(120)


@dg.job
def pid_job() -> None:
    report_pid()


@dg.job
def failing_job() -> None:
    fail()


@dg.job
def sleeping_job() -> None:
    sleep_long()


# In process, as minute_pipeline_job runs: the op runs in the forked run worker itself.
defs = dg.Definitions(jobs=[pid_job, failing_job, sleeping_job], executor=dg.in_process_executor)
