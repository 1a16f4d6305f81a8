"""What a lag-sensor tick requested, for the sensor tests."""

from __future__ import annotations

import dagster as dg


def minute_requests(result: dg.SensorResult) -> list[dg.RunRequest]:
    """The minute runs a tick requested (a dbt_tests_job run may follow them when a block of minutes ends)."""
    return [r for r in result.run_requests or [] if r.job_name == "minute_pipeline_job"]
