"""The environment `stock-platform run` gives every process of the platform (runner.platform_env)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stock_platform import runner

ROOT = Path(__file__).resolve().parents[1]


def test_every_process_gets_two_malloc_arenas_unless_the_shell_says_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    env = runner.platform_env(tmp_path, {})
    assert env["MALLOC_ARENA_MAX"] == "2"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert runner.platform_env(tmp_path, {})["MALLOC_ARENA_MAX"] == "8"


def test_compose_gives_the_dagster_services_the_same_arenas() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name in ("dagster-webserver", "dagster-daemon", "code-location"):
        environment = compose["services"][name]["environment"]
        assert environment["MALLOC_ARENA_MAX"] == runner.PROCESS_ENV["MALLOC_ARENA_MAX"], name
