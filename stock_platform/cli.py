"""`stock-platform`: the project's command line."""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

# subcommand -> module exposing add_arguments(parser) and run(args) -> exit code
SUBCOMMANDS = {
    "run": (
        "stock_platform.runner",
        "run the whole platform locally: Kafka, producer, Dagster UI and daemon",
    ),
    "produce": ("stock_platform.producer.cli", "publish quotes (Finnhub, simulated or replayed) to Kafka"),
    "services": ("stock_platform.services.manage", "start, stop or show the local Kafka and S3 servers"),
    "topic": ("stock_platform.producer.topic_cli", "create the quote and DLQ topics, or fix the quote topic"),
    "rebuild": ("stock_platform.ingestion.rebuild", "rebuild the raw table, silver and gold from the lake"),
    "dashboard": ("stock_platform.dashboard.cli", "serve the live dashboard of the gold tables (Streamlit)"),
}
# Dev and test tooling, left out of the production image (docker/Dockerfile.dockerignore).
LOCAL_ONLY = ("stock_platform.runner", "stock_platform.services")


def load(command: str) -> ModuleType:
    """Import only the chosen subcommand's module, so each command works where its own code is present."""
    module_name = SUBCOMMANDS[command][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith(LOCAL_ONLY):
            raise
        raise SystemExit(
            f"stock-platform {command}: {exc.name} is not installed here. The local services and the "
            "one-command platform are dev and test tooling, not part of the production image; run "
            f"`stock-platform {command}` from a checkout of the repository (./scripts/run.sh)"
        ) from exc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="stock-platform", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    parsers = {
        name: sub.add_parser(name, help=help_text, description=help_text)
        for name, (_, help_text) in SUBCOMMANDS.items()
    }
    # The top-level parser has no options of its own, so the first plain word is the subcommand.
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    module = None
    if command in parsers:
        module = load(command)
        module.add_arguments(parsers[command])
    args = parser.parse_args(argv)
    assert module is not None  # parse_args exits unless a known subcommand was given
    return module.run(args)


if __name__ == "__main__":
    sys.exit(main())
