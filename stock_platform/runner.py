"""`stock-platform run`: the whole platform on its embedded defaults, one command, no Docker.

Starts (or reuses) the local Kafka broker, the quote producer (simulated unless FINNHUB_API_KEY is set)
and Dagster's webserver + daemon on a SQLite instance under ``<STOCK_PLATFORM_HOME>/dagster_home``, where
the lag sensor turns each closed minute into a run. Ctrl-C stops what it started.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from stock_platform.services import manage
from stock_platform.services.paths import PROJECT_ROOT, platform_home
from stock_platform.services.process import MissingPrerequisite, ServiceFailed, port_open, spawn, stop_process

DAGSTER_YAML = """\
# Written by `stock-platform run`: a local instance (SQLite under this folder).
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    # A closed minute's run should start within a second of being requested (default: every 5 s).
    dequeue_interval_seconds: 1
concurrency:
  runs:
    max_concurrent_runs: 4
    tag_concurrency_limits:
      # Ingestion runs execute one at a time, in the order the lag sensor requested them.
      - key: stock_platform/ingest
        limit: 1
  pools:
    # The warehouse_writes pool (raw table loads): one writer at a time.
    default_limit: 1
retention:
  sensor:
    purge_after_days:
      skipped: 1
"""


def platform_env(home: Path, kafka_settings: dict[str, str]) -> dict[str, str]:
    """The environment every process of a local run shares; explicit settings in os.environ win."""
    defaults = {
        "STOCK_PLATFORM_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster_home"),
        "DUCKDB_PATH": str(home / "warehouse.duckdb"),
        "LAKE_DIR": str(home / "lake"),
        **kafka_settings,
    }
    return {**defaults, **os.environ}


def prepare_dagster_home(dagster_home: Path) -> None:
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=3000, help="Dagster UI port on 127.0.0.1")
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--no-producer", action="store_true", help="do not start the quote producer")
    parser.add_argument("--symbols", type=int, default=20, help="simulated feed: number of symbols")
    parser.add_argument("--rate", type=float, default=20.0, help="simulated feed: quotes per second in all")


def run(args: argparse.Namespace) -> int:
    home = platform_home()
    services_args = argparse.Namespace(kafka_port=args.kafka_port, s3_port=7070, fakesnow_port=8085)
    try:
        kafka_settings = manage.up(["kafka"], services_args, home)["kafka"]
    except (MissingPrerequisite, ServiceFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if port_open("127.0.0.1", args.port):
        print(f"error: port {args.port} on 127.0.0.1 is in use; pass --port", file=sys.stderr)
        return 1
    env = platform_env(home, kafka_settings)
    prepare_dagster_home(Path(env["DAGSTER_HOME"]))
    logs = home / "logs"
    children: list[tuple[str, int]] = []
    if not args.no_producer:
        producer = [sys.executable, "-m", "stock_platform.cli", "produce"]
        if not env.get("FINNHUB_API_KEY"):
            producer += [
                "--source",
                "simulated",
                "--symbol-count",
                str(args.symbols),
                "--rate",
                str(args.rate),
            ]
        children.append(("producer", spawn(producer, logs / "producer.log", env=env, cwd=PROJECT_ROOT).pid))
    dagster = [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
               "-h", "127.0.0.1", "-p", str(args.port)]  # fmt: skip
    children.append(("dagster", spawn(dagster, logs / "dagster.log", env=env, cwd=PROJECT_ROOT).pid))

    print(f"Dagster UI:      http://127.0.0.1:{args.port}  (log: {logs / 'dagster.log'})")
    print(f"Kafka:           {kafka_settings['KAFKA_BOOTSTRAP_SERVERS']}")
    print(f"Warehouse file:  {env['DUCKDB_PATH']}")
    print(f"Raw objects:     {env['LAKE_DIR']}")
    print("Ctrl-C stops the producer and Dagster; `stock-platform services down` stops Kafka.")
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping:
            for name, pid in children:
                finished, status = os.waitpid(pid, os.WNOHANG)
                if finished:
                    print(
                        f"error: {name} exited with status {status}; see {logs / (name + '.log')}",
                        file=sys.stderr,
                    )
                    return 1
            time.sleep(0.5)
    finally:
        for name, pid in reversed(children):
            stop_process(pid)
            print(f"stopped {name}")
    return 0
