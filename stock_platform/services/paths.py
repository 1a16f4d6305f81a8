"""Where local services keep their cached downloads and their data (STOCK_PLATFORM_CACHE, _HOME)."""

from __future__ import annotations

from pathlib import Path

from stock_platform.settings import PROJECT_ROOT as PROJECT_ROOT
from stock_platform.settings import load_settings


def cache_dir() -> Path:
    """Downloaded jars and binaries, keyed by version; git-ignored, kept across runs."""
    return load_settings().cache_dir


def platform_home() -> Path:
    """Everything a local run writes (lake, warehouse file, service data, Dagster instance)."""
    return load_settings().home
