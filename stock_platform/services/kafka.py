"""A real Apache Kafka broker, KRaft single node, run from jars that Maven resolves from Maven Central.

No Kafka broker is packaged for PyPI, npm or Debian, and librdkafka's mock cluster lacks timestamp
lookups (``offsets_for_times``), which the ingestion depends on; so the project runs the real thing.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from stock_platform.services.paths import PROJECT_ROOT, cache_dir
from stock_platform.services.process import (
    LocalService,
    MissingPrerequisite,
    ServiceFailed,
    free_port,
    require_tool,
)

KAFKA_VERSION = "4.1.1"
# Bump when services/kafka/pom.xml changes, so caches resolved from an older pom are not reused.
POM_REVISION = 2
POM = PROJECT_ROOT / "services" / "kafka" / "pom.xml"

LOG4J2_CONFIG = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
"""


def resolve_jars(version: str = KAFKA_VERSION) -> Path:
    """The folder of the broker's jars, resolved with Maven on first use and cached by version."""
    libs = cache_dir() / f"kafka-{version}-r{POM_REVISION}" / "libs"
    if libs.is_dir() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    mvn = require_tool(
        "mvn", "to resolve the Kafka broker's jars from Maven Central", "Debian: apt-get install maven"
    )
    staging = libs.with_name(f"libs.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
         f"-Dkafka.version={version}", f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise ServiceFailed(
            f"Maven could not resolve Kafka {version}:\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
        )
    # Publish the folder whole, so an interrupted download is never mistaken for a complete one.
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    return libs


def _java() -> str:
    java = require_tool(
        "java",
        "to run the local Kafka broker (Java 17 or newer)",
        "Debian: apt-get install openjdk-17-jre-headless",
    )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    # `openjdk version "17.0.15"` / `"1.8.0_392"`: Kafka 4 brokers need 17+.
    quoted = out.split('"')[1] if '"' in out else "0"
    major = int(quoted.split(".")[1] if quoted.startswith("1.") else quoted.split(".")[0])
    if major < 17:
        raise MissingPrerequisite(
            f"Kafka {KAFKA_VERSION} needs Java 17 or newer; `java -version` says {quoted}"
        )
    return java


def new_cluster_id() -> str:
    # Kafka's Uuid text form: URL-safe base64 of 16 bytes without padding. It can start with "-", which
    # is why it is passed as --cluster-id=<id>, never as a separate argument.
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def node_properties(
    data_dir: Path, node_id: int, port: int, controller_port: int, quorum: dict[str, str], replicas: int
) -> dict[str, str]:
    """server.properties of one broker+controller node on loopback: a standalone broker or a cluster's node.

    ``quorum`` says how the node finds its controllers (a standalone node bootstraps from itself, a
    cluster's nodes list the static voters). ``replicas`` is the cluster's size: the internal topics and
    the default for new topics are replicated on every node, and an acknowledged write must be on all but
    one of them (at least one), so one node may die without losing an acknowledged record.
    """
    min_isr = str(max(1, replicas - 1))
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        **quorum,
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        "num.partitions": "1",
        "default.replication.factor": str(replicas),
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": "5",
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": "0",
        # The cleaner's default 128 MiB dedupe buffer does not fit a small heap.
        "log.cleaner.dedupe.buffer.size": "8388608",
        "log.retention.hours": "168",
    }


@dataclass
class KafkaBroker(LocalService):
    """One broker+controller on loopback; ``data_dir`` holds its config, log segments and log file.

    Alone it is a single-node cluster that formats itself. ``KafkaCluster`` (kafka_cluster.py) sets
    ``node_id``, ``voters`` and ``cluster_id`` to make it one node of a multi-node cluster.
    """

    data_dir: Path
    port: int = 0
    controller_port: int = 0
    heap: str = "512m"
    version: str = KAFKA_VERSION
    pid: int | None = None
    node_id: int = 1
    # The static controller quorum, ``id@host:port`` per node, comma-separated; empty for a standalone node.
    voters: str = ""
    # The id every node of a cluster is formatted with; a standalone node makes up its own.
    cluster_id: str = ""

    name = "kafka"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    def settings(self) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers}

    def _write_config(self) -> Path:
        if self.voters:
            quorum = {"controller.quorum.voters": self.voters}
        else:
            quorum = {"controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}"}
        replicas = len(self.voters.split(",")) if self.voters else 1
        props = node_properties(
            self.data_dir, self.node_id, self.port, self.controller_port, quorum, replicas
        )
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.data_dir / "log4j2.properties").write_text(
            LOG4J2_CONFIG.format(log=self.data_dir / "server.log")
        )
        return path

    def describe(self) -> str:
        return f"Kafka node {self.node_id}" if self.voters else "Kafka broker"

    def prepare(self) -> list[str]:
        """Pick ports, write the config, format the storage on first use; the command that runs the node."""
        java = _java()
        libs = resolve_jars(self.version)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        config = self._write_config()
        classpath = f"{libs}/*"
        jvm = [java, f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
               f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}", "-cp", classpath]  # fmt: skip
        if not (self.data_dir / "logs" / "meta.properties").exists():
            # A standalone node is the one voter of its own dynamic quorum; a cluster's nodes share an id
            # and find each other through the static voters in their config.
            quorum_args = [] if self.voters else ["--standalone"]
            fmt = subprocess.run(
                [*jvm, "kafka.tools.StorageTool", "format", *quorum_args,
                 f"--cluster-id={self.cluster_id or new_cluster_id()}", "--config", str(config)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if fmt.returncode != 0:
                raise ServiceFailed(f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}")
        return [*jvm, "kafka.Kafka", str(config)]

    def start(self, timeout_s: float = 90.0) -> KafkaBroker:
        self._launch(self.prepare(), self.describe(), self.ready, timeout_s)
        return self

    def ready(self) -> bool:
        """Ready means a metadata request to this node answers with this node among the live brokers."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "socket.timeout.ms": 1000,
                             "log_level": 0})  # fmt: skip
        try:
            return self.node_id in admin.list_topics(timeout=1.0).brokers
        except Exception:  # noqa: BLE001 - any failure here just means "not yet"
            return False
