"""A run launcher for tests that only records which runs it was asked to launch (no process is started)."""

from __future__ import annotations

from dagster._core.launcher.base import LaunchRunContext, RunLauncher


class RecordingRunLauncher(RunLauncher):
    """Given to an in-memory instance directly (not loaded from config, so not a ConfigurableClass)."""

    def __init__(self) -> None:
        self.launched: list[str] = []
        super().__init__()

    def launch_run(self, context: LaunchRunContext) -> None:
        self.launched.append(context.dagster_run.run_id)

    def terminate(self, run_id: str) -> bool:
        return False
