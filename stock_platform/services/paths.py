"""Where local services keep their cached downloads and their data."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """Downloaded jars and binaries, keyed by version; git-ignored, kept across runs."""
    return Path(os.environ.get("STOCK_PLATFORM_CACHE", PROJECT_ROOT / ".cache"))


def platform_home() -> Path:
    """Everything a local run writes (lake, warehouse file, service data, Dagster instance)."""
    return Path(os.environ.get("STOCK_PLATFORM_HOME", Path.cwd() / ".stock_platform")).resolve()
