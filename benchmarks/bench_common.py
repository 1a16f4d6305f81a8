"""Shared pieces of the platform-level benchmarks: a local broker, fast quote production, the real
Dagster daemon on a temporary instance, and a /proc sampler of a process tree's memory.

Not a benchmark itself; the scripts next to it import it (they run as ``python benchmarks/NAME.py``, so
this folder is on ``sys.path``).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from stock_platform.kafka_topic import QUOTE_TOPIC_CONFIG

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: list[float], digits: int = 3) -> dict[str, Any]:
    """count, p50, p95, max (and mean) of ``values``, rounded."""
    if not values:
        return {"count": 0, "p50": None, "p95": None, "max": None, "mean": None}
    return {
        "count": len(values),
        "p50": round(statistics.median(values), digits),
        "p95": round(percentile(values, 95) or 0.0, digits),
        "max": round(max(values), digits),
        "mean": round(statistics.fmean(values), digits),
    }


@contextlib.contextmanager
def broker(bootstrap_servers: str | None, workdir: Path) -> Iterator[str]:
    """The given broker, or a fresh local one (stopped on exit) under ``workdir``."""
    if bootstrap_servers:
        yield bootstrap_servers
        return
    from stock_platform.services.kafka import KafkaBroker

    kafka = KafkaBroker(workdir / "kafka", heap="1g").start()
    try:
        yield kafka.bootstrap_servers
    finally:
        kafka.stop()


def create_topic(bootstrap: str, partitions: int, prefix: str = "bench", append_time: bool = False) -> str:
    """A topic for a benchmark: LogAppendTime as in production when records are produced live;
    CreateTime when a benchmark writes history at chosen timestamps (then the platform runs with
    KAFKA_REQUIRE_LOG_APPEND_TIME=false)."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = dict(QUOTE_TOPIC_CONFIG) if append_time else {}
    admin.create_topics([NewTopic(name, partitions, 1, config=config)])[name].result(30)
    return name


# A valid quote record (docs/contracts.md) as a byte template: json.dumps per record would cost more
# than the broker does at millions of records.
_TEMPLATE = (
    '{{"schema_version":1,"symbol":"{symbol}","c":{c:.2f},"d":{d:.2f},"dp":{dp:.4f},"h":{h:.2f},'
    '"l":{l:.2f},"o":100.0,"pc":100.0,"t":{t},"fetched_at":{ms},"source":"simulated",'
    '"producer_run_id":"{run_id}","seq":{seq}}}'
)


def quote_bytes(symbol: str, seq: int, ms: int, run_id: str) -> bytes:
    c = 100.0 + (seq % 997) / 100
    return _TEMPLATE.format(
        symbol=symbol, c=c, d=c - 100.0, dp=c - 100.0, h=c + 1.0, l=c - 1.0, t=ms // 1000, ms=ms,
        run_id=run_id, seq=seq,
    ).encode()  # fmt: skip


def fast_producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 100,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "acks": 1,
        }
    )


def produce_grid(
    bootstrap: str,
    topic: str,
    partitions: int,
    symbols: int,
    first_ms: int,
    seconds: int,
    step_ms: int = 1000,
    run_id: str = "benchmark",
    progress: bool = False,
) -> int:
    """Each of ``symbols`` symbols quotes once per ``step_ms`` for ``seconds`` seconds from ``first_ms``
    (explicit Kafka timestamps = fetched_at, symbol key → partition ``symbol % partitions``); returns the count.
    """
    producer = fast_producer(bootstrap)
    names = [f"S{n:05d}" for n in range(symbols)]
    seq = 0
    started = time.monotonic()
    steps = seconds * 1000 // step_ms
    for step in range(steps):
        base = first_ms + step * step_ms
        for n, symbol in enumerate(names):
            # Spread a second's quotes over the second, like a producer cycling through symbols.
            ms = base + n * step_ms // symbols
            value = quote_bytes(symbol, seq, ms, run_id)
            while True:
                try:
                    producer.produce(topic, value, key=symbol, partition=n % partitions, timestamp=ms)
                    break
                except BufferError:
                    producer.poll(0.05)
            seq += 1
        producer.poll(0)
        if progress and step % 3600 == 0 and step:
            rate = seq / (time.monotonic() - started)
            print(f"  produced {seq:,} records ({rate:,.0f}/s)", file=sys.stderr, flush=True)
    left = producer.flush(300)
    if left:
        raise RuntimeError(f"{left} records were not delivered to {topic}")
    return seq


# ---------------------------------------------------------------------------------------------------
# The real daemon on a temporary instance


@dataclass
class DaemonPlatform:
    """``dagster-daemon run`` (or ``dagster dev``) with a temporary DAGSTER_HOME and the platform env."""

    workdir: Path
    bootstrap: str
    topic: str
    extra_env: dict[str, str] = field(default_factory=dict)
    dev: bool = False
    port: int = 0
    process: subprocess.Popen | None = None
    run_host: subprocess.Popen | None = None

    @property
    def dagster_home(self) -> Path:
        return self.workdir / "dagster_home"

    @property
    def duckdb_path(self) -> Path:
        return self.workdir / "warehouse.duckdb"

    @property
    def log_path(self) -> Path:
        return self.workdir / ("dagster_dev.log" if self.dev else "daemon.log")

    def env(self) -> dict[str, str]:
        from stock_platform.runner import PROCESS_ENV

        return {
            **PROCESS_ENV,  # as `stock-platform run` sets it (a value in os.environ wins there too)
            **os.environ,
            "DAGSTER_HOME": str(self.dagster_home),
            "STOCK_PLATFORM_HOME": str(self.workdir),
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_TOPIC": self.topic,
            "KAFKA_INGEST_GROUP": f"ingest-{self.topic}",
            "DUCKDB_PATH": str(self.duckdb_path),
            "LAKE_DIR": str(self.workdir / "lake"),
            "OBJECT_STORE": "local",
            "WAREHOUSE": "duckdb",
            "DBT_TARGET": "duckdb",
            **self.extra_env,
        }

    def start(self) -> DaemonPlatform:
        from stock_platform.orchestration.warm_launcher import start_run_host_ahead
        from stock_platform.runner import prepare_dagster_home

        prepare_dagster_home(self.dagster_home)
        # As `stock-platform run` does: the warm run host loads while the daemon starts.
        self.run_host = start_run_host_ahead(
            self.dagster_home, self.env(), PROJECT_ROOT, self.workdir / "run_host.log"
        )
        bindir = Path(sys.executable).parent
        if self.dev:
            from stock_platform.services.process import free_port

            self.port = self.port or free_port()
            argv = [str(bindir / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1",
                    "-p", str(self.port)]  # fmt: skip
        else:
            argv = [str(bindir / "dagster-daemon"), "run", "-w", "workspace.yaml"]
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                argv, cwd=PROJECT_ROOT, env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def root_pids(self) -> list[int]:
        """The daemon's (or `dagster dev`'s) process and the run host started ahead: every process of the
        platform, the runs included, is in one of their trees."""
        return [p.pid for p in (self.process, self.run_host) if p is not None]

    def stop(self) -> None:
        """Stop the daemon's process group, then any process of its tree that left the group (a run
        worker still holding the DuckDB file), so the warehouse can be read afterwards."""
        if self.process is not None:
            from stock_platform.services.process import stop_process

            started = tree(self.process.pid)
            stop_process(self.process.pid)
            for pid in started[1:]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            self.process = None
        if self.run_host is not None:  # its runs are in its process group
            from stock_platform.runner import stop_run_host_ahead

            stop_run_host_ahead(self.run_host)
            self.run_host = None

    @contextlib.contextmanager
    def instance(self) -> Iterator[Any]:
        """A DagsterInstance on the temporary home, for reading runs and events (SQLite allows it)."""
        import dagster as dg

        previous = os.environ.get("DAGSTER_HOME")
        os.environ["DAGSTER_HOME"] = str(self.dagster_home)
        try:
            with dg.DagsterInstance.get() as instance:
                yield instance
        finally:
            if previous is None:
                os.environ.pop("DAGSTER_HOME", None)
            else:
                os.environ["DAGSTER_HOME"] = previous


def committed_lag(bootstrap: str, topic: str, group: str) -> int:
    """Records of ``topic`` the group has not committed (high watermark - committed)."""
    from stock_platform.resources.kafka import KafkaResource

    return sum(lag.lag for lag in KafkaResource(bootstrap_servers=bootstrap, topic=topic, ingest_group=group,
                                                 require_log_append_time=False).consumer_lag())  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Memory of a process tree, from /proc


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    with contextlib.suppress(OSError):
        for task in task_dir.iterdir():
            with contextlib.suppress(OSError):
                kids += [int(c) for c in (task / "children").read_text().split()]
    return kids


def tree(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack += _children(current)
    return found


def rss_bytes(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * PAGE_SIZE


def pss_bytes(pid: int) -> int:
    """Proportional set size: each page shared between processes (a forked run worker shares its warm
    host's imports) counted once across them, so a tree's PSS sum is the memory it actually holds."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return ""


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds_and_parent(pid: int) -> tuple[float, int] | None:
    """User + system CPU seconds the process has used so far, and its parent's pid (/proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, int(fields[1])


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, all) CPU seconds of every core since boot, from /proc/stat (idle and iowait are not busy)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS, sum(values) / CLOCK_TICKS


class TreeRssSampler:
    """Every ``interval_s``: RSS and PSS of each process in the trees; keeps the peak single process, the
    peak RSS sum (pages shared by a fork counted in each process), the peak PSS sum (counted once), and
    which processes made up the peak PSS sum. Also the CPU seconds each process used (as last sampled:
    up to ``interval_s`` of a process that ended is missed), summed per command line, and the machine's
    busy CPU seconds over the sampler's life: whether the cores were the limit, and who used them."""

    def __init__(self, *root_pids: int, interval_s: float = 0.5) -> None:
        self.root_pids = root_pids
        self.interval_s = interval_s
        self.peak_single = 0
        self.peak_single_cmd = ""
        self.peak_sum = 0
        self.peak_processes = 0
        self.peak_pss_sum = 0
        self.peak_pss_breakdown: list[tuple[int, str]] = []
        self.peak_pss_at = ""  # UTC time of the peak, to find the step that ran then in the run logs
        self.samples = 0
        self._cpu: dict[int, tuple[float, str]] = {}  # pid -> (CPU seconds as last sampled, label)
        self._machine_start = machine_cpu_seconds()
        self._machine_end = self._machine_start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            pids = [pid for root in self.root_pids for pid in tree(root)]
            sizes = {p: rss_bytes(p) for p in pids}
            pss = {p: pss_bytes(p) for p in pids}
            total = sum(sizes.values())
            self.samples += 1
            if sizes:
                pid, biggest = max(sizes.items(), key=lambda kv: kv[1])
                if biggest > self.peak_single:
                    self.peak_single, self.peak_single_cmd = biggest, cmdline(pid)
            if total > self.peak_sum:
                self.peak_sum, self.peak_processes = total, len(sizes)
            for pid in pids:
                used = cpu_seconds_and_parent(pid)
                if used is not None:
                    label = self._cpu[pid][1] if pid in self._cpu else self._label(pid, used[1])
                    self._cpu[pid] = (used[0], label)
            self._machine_end = machine_cpu_seconds()
            pss_total = sum(pss.values())
            if pss_total > self.peak_pss_sum:
                self.peak_pss_sum = pss_total
                self.peak_pss_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                self.peak_pss_breakdown = sorted(((v, cmdline(p)[:90]) for p, v in pss.items()), reverse=True)
            self._stop.wait(self.interval_s)

    @staticmethod
    def _label(pid: int, parent: int) -> str:
        command = cmdline(pid)[:90]
        # A run worker forked from the warm run host keeps the host's command line.
        return f"{command} [forked]" if command and command == cmdline(parent)[:90] else command

    def __enter__(self) -> TreeRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, Any]:
        mib = 1024 * 1024
        return {
            "peak_single_process_rss_mib": round(self.peak_single / mib, 1),
            "peak_single_process": self.peak_single_cmd,
            "peak_tree_sum_rss_mib": round(self.peak_sum / mib, 1),
            "processes_at_peak_sum": self.peak_processes,
            "peak_tree_sum_pss_mib": round(self.peak_pss_sum / mib, 1),
            "peak_pss_at": self.peak_pss_at,
            "pss_mib_at_peak": [[round(v / mib), cmd] for v, cmd in self.peak_pss_breakdown],
            "samples": self.samples,
            "cpu_seconds_by_command": self._cpu_by_command(),
            "machine_cpu_busy_seconds": round(self._machine_end[0] - self._machine_start[0], 1),
            "machine_cpu_utilisation": round(
                (self._machine_end[0] - self._machine_start[0])
                / max(self._machine_end[1] - self._machine_start[1], 1e-9),
                3,
            ),
        }

    def _cpu_by_command(self) -> list[list[Any]]:
        totals: collections.Counter[str] = collections.Counter()
        for used, label in self._cpu.values():
            totals[label] += used
        return [[round(v, 1), label] for label, v in totals.most_common(12)]


def emit(report: dict[str, Any], out: Path | None = None) -> None:
    text = json.dumps(report, indent=2, default=str)
    print(text, flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


def all_materializations(instance: Any, name: str) -> list[Any]:
    """Every materialization record of an asset (Dagster caps one fetch at 10,000 records)."""
    import dagster as dg

    records: list[Any] = []
    cursor = None
    while True:
        result = instance.fetch_materializations(dg.AssetKey(name), limit=10_000, cursor=cursor)
        records += result.records
        if not result.has_more:
            return records
        cursor = result.cursor


def connect_when_free(path: Path, timeout_s: float = 60.0) -> Any:
    """A read-only DuckDB connection, waiting while a stopping process still holds the file's lock."""
    import duckdb

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return duckdb.connect(str(path), read_only=True)
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
