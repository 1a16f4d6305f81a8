"""`stock-platform run`: the whole platform on its embedded defaults, one command, no Docker.

Starts (or reuses) the local Kafka broker, the quote producer (simulated unless FINNHUB_API_KEY is set),
the live dashboard of the gold tables, and Dagster's webserver + daemon on a SQLite instance under ``<STOCK_PLATFORM_HOME>/dagster_home``, where
the lag sensor turns each closed minute into a run (``--postgres``: the instance's storage in a throwaway
local PostgreSQL instead, as compose keeps it). Ctrl-C stops what it started.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from stock_platform.services import manage
from stock_platform.services.paths import PROJECT_ROOT
from stock_platform.services.postgres import PostgresServer
from stock_platform.services.process import MissingPrerequisite, ServiceFailed, port_open, spawn, stop_process
from stock_platform.settings import Settings, SettingsError, load_settings

# The local instance keeps docker/dagster.yaml's run policy (queue, concurrency, monitoring, retention),
# leaves storage and compute logs at Dagster's local defaults (SQLite, files here), and starts runs from a
# warm run host (orchestration/warm_launcher.py): locally the daemon and the runs share one machine and
# one environment, so a run need not import the code location anew (compose runs them in the code
# location's container instead).
POLICY_SOURCE = PROJECT_ROOT / "docker" / "dagster.yaml"
POLICY_SECTIONS = ("run_coordinator", "concurrency", "run_monitoring", "retention", "telemetry")
LOCAL_RUN_LAUNCHER = {
    "module": "stock_platform.orchestration.warm_launcher",
    "class": "WarmRunLauncher",
}
# Dagster's SQLite storage (the same files under the home), writing a range run's thousands of
# per-partition events in a few transactions (orchestration/batched_sqlite.py).
LOCAL_SQLITE_STORAGE = {
    "module": "stock_platform.orchestration.batched_sqlite",
    "class": "BatchedSqliteStorage",
}
# The first line of every config this command writes: a file that starts otherwise was edited by hand.
LOCAL_MARK = "# Written by `stock-platform run`"
LOCAL_HEADER = f"{LOCAL_MARK}: a local instance (SQLite under this folder).\n"
POSTGRES_HEADER = (
    f"{LOCAL_MARK} --postgres: a local instance on the run's throwaway PostgreSQL, with\n"
    "# docker/dagster.yaml's storage section (its port: the local server's); DAGSTER_POSTGRES_* come from\n"
    "# the run's environment, as they do in compose.\n"
)


def local_instance_yaml(dagster_home: Path, postgres_port: int | None = None) -> str:
    """The local instance config: the policy sections of docker/dagster.yaml and the warm launcher, and
    batched SQLite storage under ``dagster_home`` or, given the port of a local PostgreSQL,
    docker/dagster.yaml's storage section pointed at it."""
    import yaml  # type: ignore[import-untyped]  # PyYAML, which Dagster depends on, ships no types

    deployed = yaml.safe_load(POLICY_SOURCE.read_text())
    policy = {name: deployed[name] for name in POLICY_SECTIONS if name in deployed}
    if postgres_port is None:
        storage = {"custom": {**LOCAL_SQLITE_STORAGE, "config": {"base_dir": str(dagster_home)}}}
        header = LOCAL_HEADER
    else:
        # The deployed section itself (its driver scheme among the rest); only the port is compose's own.
        storage = deployed["storage"]
        storage["postgres"]["postgres_db"]["port"] = postgres_port
        header = POSTGRES_HEADER
    policy = {"storage": storage, **policy}
    return (
        f"{header}# Its run policy is copied from docker/dagster.yaml, where it is explained; runs are\n"
        "# forked from a warm run host (stock_platform/orchestration/warm_launcher.py).\n"
        + yaml.safe_dump({**policy, "run_launcher": LOCAL_RUN_LAUNCHER}, sort_keys=False)
    )


# glibc gives every thread that allocates its own malloc arena (up to eight per core) and seldom returns
# their pages: the code server's gRPC threads, a run's Kafka, compression and dbt threads each kept tens of
# MiB there. Two arenas suffice for processes whose Python runs one thread at a time; a 24 h catch-up's
# run host, run worker and code server peaked ~180 MiB lower with it (docs/benchmarks.md, stop 24).
PROCESS_ENV = {"MALLOC_ARENA_MAX": "2"}


def platform_defaults(home: Path, kafka_settings: dict[str, str]) -> dict[str, str]:
    """Where a local run under ``home`` keeps everything, and the Kafka it talks to.

    Written out as absolute paths, so every child (dbt in its project folder among them) sees the same.
    """
    paths = load_settings({"STOCK_PLATFORM_HOME": str(home)})
    return {
        "STOCK_PLATFORM_HOME": str(paths.home),
        "DAGSTER_HOME": str(paths.dagster_home_dir),
        "DUCKDB_PATH": str(paths.duckdb_file),
        "LAKE_DIR": str(paths.lake_root),
        **PROCESS_ENV,
        **kafka_settings,
    }


def platform_env(home: Path, kafka_settings: dict[str, str]) -> dict[str, str]:
    """The environment every process of a local run shares; explicit settings in os.environ win."""
    return {**platform_defaults(home, kafka_settings), **os.environ}


def prepare_dagster_home(dagster_home: Path, postgres_port: int | None = None) -> None:
    """Write the instance config (one a user edited, without our header line, is left alone) and create
    the instance's tables (SQLite, or the local PostgreSQL's on ``postgres_port``).

    The tables must exist before the webserver, daemon and code server start: when they all create them
    at once, their schema migrations race and leave the instance unusable.
    """
    import dagster as dg

    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists() or config.read_text().startswith(LOCAL_MARK):
        config.write_text(local_instance_yaml(dagster_home.resolve(), postgres_port))
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.get_runs(limit=1)
        instance.all_instigator_state()
        instance.get_latest_materialization_event(dg.AssetKey("stock_quotes_topic"))


def ensure_quote_topics(env: dict[str, str]) -> bool:
    """The quote topic with the broker's append time, and the DLQ topic, before anything reads or writes
    them (the producer would create them too, but Dagster starts at the same time); False on failure."""
    from confluent_kafka import KafkaException

    from stock_platform.producer import topic_cli
    from stock_platform.producer.publisher import KafkaUnreachable

    try:
        lines = topic_cli.ensure_from_settings(
            topic_cli.topic_settings(load_settings(env)), connect_timeout=30.0
        )
    except (ValueError, KafkaUnreachable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    except KafkaException as exc:
        print(f"error: Kafka refused to create or configure the quote topics: {topic_cli.kafka_error(exc)}",
              file=sys.stderr)  # fmt: skip
        return False
    for line in lines:
        print(line)
    return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=3000, help="Dagster UI port on 127.0.0.1")
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument(
        "--minutes",
        type=int,
        default=0,
        help="stop once this many closed minutes have reached gold, and print gold_kpi (default: run until Ctrl-C)",
    )
    parser.add_argument("--no-producer", action="store_true", help="do not start the quote producer")
    parser.add_argument("--no-dashboard", action="store_true", help="do not start the live dashboard")
    parser.add_argument(
        "--dashboard-port",
        type=int,
        default=None,
        help="live dashboard port on 127.0.0.1 (default DASHBOARD_PORT, 8501)",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="keep Dagster's runs and events in a throwaway local PostgreSQL with docker/dagster.yaml's "
        "storage settings, as compose does (gone when the run stops; default: SQLite under the home)",
    )
    parser.add_argument("--symbols", type=int, default=20, help="simulated feed: number of symbols")
    parser.add_argument("--rate", type=float, default=20.0, help="simulated feed: quotes per second in all")


def producer_command(settings: Settings, args: argparse.Namespace) -> list[str]:
    command = [sys.executable, "-m", "stock_platform.cli", "produce"]
    if settings.finnhub_api_key is None:
        command += ["--source", "simulated", "--symbol-count", str(args.symbols), "--rate", str(args.rate)]
    return command


def minutes_in_gold(instance: Any, since: float) -> int:
    """Closed minutes whose minute_pipeline_job run succeeded after ``since`` (a range run counts each)."""
    import dagster as dg

    from stock_platform.orchestration.planning import minutes_between
    from stock_platform.partitions import run_minute_range

    count = 0
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            job_name="minute_pipeline_job",
            statuses=[dg.DagsterRunStatus.SUCCESS],
            created_after=dt.datetime.fromtimestamp(since, dt.UTC),
        )
    )
    for run in runs:
        minutes = run_minute_range(run.tags)
        if minutes is not None:
            count += minutes_between(*minutes)
    return count


def runs_in_flight(instance: Any) -> int:
    import dagster as dg

    in_flight = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
    return len(instance.get_run_ids(filters=dg.RunsFilter(statuses=in_flight)))


def print_gold_kpi(duckdb_path: str) -> None:
    import duckdb

    with duckdb.connect(duckdb_path, read_only=True) as conn:
        rows = conn.execute(
            "select symbol, price, change, change_pct, day_high, day_low, as_of from gold.gold_kpi order by symbol"
        ).fetchall()
    print(f"\ngold_kpi ({len(rows)} symbols, from {duckdb_path}):")
    print(
        f"{'symbol':<8} {'price':>10} {'change':>9} {'change%':>8} {'day high':>10} {'day low':>10}  as of (UTC)"
    )
    for symbol, price, change, pct, high, low, as_of in rows:
        print(f"{symbol:<8} {price:>10.2f} {change:>9.2f} {pct:>8.2f} {high:>10.2f} {low:>10.2f}  {as_of}")


class Platform:
    """The processes of one local run, stopped in reverse order of start."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.env = env
        self.children: dict[str, int] = {}
        # Started and stopped with the others, but may end on its own (the warm run host does, when the
        # daemon's launcher replaces it): its end is not a failure.
        self.companions: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: list[str]) -> None:
        self.children[name] = spawn(command, self.logs / f"{name}.log", env=self.env, cwd=PROJECT_ROOT).pid

    def start_run_host(self, dagster_home: Path) -> None:
        """The warm run host, loading while ``dagster dev`` starts (warm_launcher.start_run_host_ahead)."""
        from stock_platform.orchestration.warm_launcher import start_run_host_ahead

        host = start_run_host_ahead(dagster_home, self.env, PROJECT_ROOT, self.logs / "run_host.log")
        if host is not None:
            self.companions["run host"] = host

    def exited(self) -> str | None:
        for name, pid in self.children.items():
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                return f"{name} exited with status {status}; see {self.logs / (name + '.log')}"
        return None

    def stop(self, name: str) -> None:
        pid = self.children.pop(name, None)
        if pid is not None:
            stop_process(pid)
            print(f"stopped {name}")

    def stop_all(self) -> None:
        for name in reversed(list(self.children)):
            self.stop(name)
        # After the daemon, which could otherwise start runs on it; its runs' processes are in its group.
        for host in self.companions.values():
            stop_run_host_ahead(host)
        self.companions.clear()


def stop_run_host_ahead(host: subprocess.Popen) -> None:
    """Stop a host started by warm_launcher.start_run_host_ahead: end its starter's pipe (a host still
    loading or serving ends by itself then), and stop its process group, where the runs it forked are.
    Here, not in warm_launcher: the production image has no stock_platform.services."""
    if host.stdin is not None:
        host.stdin.close()
    stop_process(host.pid)


def run(args: argparse.Namespace) -> int:
    import dagster as dg

    try:
        started_with = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    home = started_with.home
    kafka_was_running = manage.running(home, "kafka") is not None
    services_args = argparse.Namespace(kafka_port=args.kafka_port, s3_port=7070, fakesnow_port=8085)
    if port_open("127.0.0.1", args.port):
        print(f"error: port {args.port} on 127.0.0.1 is in use; pass --port", file=sys.stderr)
        return 1
    dashboard_port = args.dashboard_port or started_with.dashboard_port
    if not args.no_dashboard and port_open("127.0.0.1", dashboard_port):
        print(
            f"error: port {dashboard_port} on 127.0.0.1 is in use; pass --dashboard-port or --no-dashboard",
            file=sys.stderr,
        )
        return 1
    try:
        kafka_settings = manage.up(["kafka"], services_args, home)["kafka"]
    except (MissingPrerequisite, ServiceFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # The dashboard's health strip links to this run's Dagster UI.
    ui = f"http://127.0.0.1:{args.port}"
    env = platform_env(home, {**kafka_settings, "DAGSTER_UI_URL": ui, "DAGSTER_WEBSERVER_URL": ui})
    settings = load_settings(env)  # valid: os.environ was read above, and the additions are paths
    if not ensure_quote_topics(env):
        if not kafka_was_running:
            manage.down(["kafka"], home)
        return 1
    postgres: PostgresServer | None = None
    if args.postgres:
        try:
            postgres = PostgresServer(home / "services" / "postgres").start()
        except (MissingPrerequisite, ServiceFailed) as exc:
            print(f"error: {exc}", file=sys.stderr)
            if not kafka_was_running:
                manage.down(["kafka"], home)
            return 1
        # The instance config reads these (as compose's does); this server's win over the shell's, and this
        # process opens the instance too.
        env.update(postgres.dagster_storage_env())
        os.environ.update(postgres.dagster_storage_env())
    platform = Platform(home / "logs", env)
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    # From here on whatever was started is stopped on the way out, a failure to start included.
    try:
        prepare_dagster_home(settings.dagster_home_dir, postgres.port if postgres is not None else None)
        # This process reads the same instance to follow the runs.
        os.environ["DAGSTER_HOME"] = str(settings.dagster_home_dir)
        platform.start_run_host(settings.dagster_home_dir)
        if not args.no_producer:
            platform.start("producer", producer_command(settings, args))
        platform.start("dagster", [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
                                   "-h", "127.0.0.1", "-p", str(args.port)])  # fmt: skip
        if not args.no_dashboard:
            platform.start("dashboard", [sys.executable, "-m", "stock_platform.cli", "dashboard",
                                         "--port", str(dashboard_port)])  # fmt: skip
        started = time.time()
        print(f"Dagster UI:      http://127.0.0.1:{args.port}  (log: {home / 'logs' / 'dagster.log'})")
        if not args.no_dashboard:
            print(
                f"Dashboard:       http://127.0.0.1:{dashboard_port}  (log: {home / 'logs' / 'dashboard.log'})"
            )
        if platform.companions:
            print(f"Run output:      {home / 'logs' / 'run_host.log'}  (the warm run host's, and its runs')")
        print(f"Kafka:           {kafka_settings['KAFKA_BOOTSTRAP_SERVERS']}")
        if postgres is not None:
            where = f"{postgres.host}:{postgres.port}, database {postgres.db}"
            print(f"Dagster storage: PostgreSQL {where}  (log: {postgres.log_path})")
        print(f"Warehouse file:  {settings.duckdb_file}")
        print(f"Raw objects:     {settings.lake_root}")
        if args.minutes:
            print(f"Stopping once {args.minutes} closed minute(s) reach gold; Ctrl-C stops earlier.")
        else:
            print("Ctrl-C stops everything.")
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        with dg.DagsterInstance.get() as instance:
            reached = 0
            while not stopping:
                problem = platform.exited()
                if problem is not None:
                    print(f"error: {problem}", file=sys.stderr)
                    return 1
                if args.minutes:
                    now_reached = minutes_in_gold(instance, started)
                    if now_reached != reached:
                        reached = now_reached
                        print(f"{reached} closed minute(s) in gold after {time.time() - started:.0f} s")
                    if reached >= args.minutes:
                        break
                time.sleep(2)
            if args.minutes and not stopping:
                # Let the runs already started finish, so the warehouse file is free to read.
                platform.stop("producer")
                deadline = time.time() + 120
                while runs_in_flight(instance) and time.time() < deadline:
                    time.sleep(1)
    finally:
        platform.stop_all()
        if postgres is not None:
            postgres.stop()
            print("stopped postgres")
        if not kafka_was_running:
            manage.down(["kafka"], home)
    if args.minutes and not stopping:
        if settings.warehouse == "duckdb":
            print_gold_kpi(str(settings.duckdb_file))
        else:
            print("gold_kpi is in the warehouse configured by WAREHOUSE; query it there.")
    return 0
