"""`stock-platform`: the project's command line."""

from __future__ import annotations

import argparse
import importlib
import sys

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
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stock-platform", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
        modules[name] = module
    args = parser.parse_args(argv)
    return modules[args.command].run(args)


if __name__ == "__main__":
    sys.exit(main())
