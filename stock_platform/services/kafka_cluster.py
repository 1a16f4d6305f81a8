"""A real multi-node Kafka cluster on loopback, for testing what the platform does when a broker dies.

Each node is a ``KafkaBroker`` (kafka.py: the same jars, config writer and start-up) in the combined
broker+controller role, with its own ports and data folder; the nodes share a cluster id and a static
controller quorum of all of them. With three nodes the internal topics and new topics are replicated three
times with ``min.insync.replicas`` 2, as a production cluster is usually configured, so the cluster keeps
accepting and serving acknowledged writes with one node down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import ElectionType, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, PartitionMetadata

from stock_platform.services.kafka import KAFKA_VERSION, KafkaBroker, new_cluster_id
from stock_platform.services.process import (
    ServiceFailed,
    free_port,
    pid_alive,
    spawn,
    stop_process,
    wait_ready,
)


@dataclass
class KafkaCluster:
    """``size`` KafkaBroker nodes (ids 1..size) under ``data_dir``; ``start_seconds`` says how long the
    last start took, from the first JVM launched to every node serving metadata."""

    data_dir: Path
    size: int = 3
    # Three JVMs share the machine: a small heap each is plenty for a test's traffic.
    heap: str = "256m"
    version: str = KAFKA_VERSION
    nodes: dict[int, KafkaBroker] = field(default_factory=dict)
    start_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.nodes:
            return
        cluster_id = new_cluster_id()
        ports = {n: (free_port(), free_port()) for n in range(1, self.size + 1)}
        voters = ",".join(f"{n}@127.0.0.1:{controller}" for n, (_, controller) in ports.items())
        self.nodes = {
            n: KafkaBroker(
                self.data_dir / f"node-{n}",
                port=port,
                controller_port=controller,
                heap=self.heap,
                version=self.version,
                node_id=n,
                voters=voters,
                cluster_id=cluster_id,
            )
            for n, (port, controller) in ports.items()
        }

    @property
    def bootstrap_servers(self) -> str:
        """Every node's listener, as a client of a real cluster lists several seed brokers."""
        return ",".join(node.bootstrap_servers for node in self.nodes.values())

    def start(self, timeout_s: float = 120.0) -> KafkaCluster:
        """Launch every node, then wait for each to serve metadata.

        All nodes are launched before any is waited for: a node cannot become ready on its own, since
        its controller quorum needs a majority of the voters to elect a leader.
        """
        started = time.monotonic()
        try:
            for node in self.nodes.values():
                if node.pid is None:
                    node.pid = spawn(node.prepare(), node.log_path).pid
            for node in self.nodes.values():
                assert node.pid is not None
                left = max(1.0, timeout_s - (time.monotonic() - started))
                wait_ready(node.describe(), node.pid, node.ready, node.log_path, left)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop every node; SIGTERM to all at once, SIGKILL to any still running after ``timeout_s``.

        Stopped one by one, the last nodes would wait for a controller quorum that is already gone.
        """
        running = [(node, pid) for node in self.nodes.values() if (pid := node.pid) is not None]
        for _, pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for node, pid in running:
            stop_process(pid, max(0.0, deadline - time.monotonic()))
            node.pid = None

    def kill(self, node_id: int) -> None:
        """SIGKILL the node, as a crash or a lost machine would: no controlled shutdown, no leader handover."""
        node = self.nodes[node_id]
        pid = node.pid
        if pid is None:
            raise ServiceFailed(f"Kafka node {node_id} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(pid):
            # Reap it when it is our child, so it does not linger as a zombie that still answers kill(0).
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if time.monotonic() > deadline:
                raise ServiceFailed(f"Kafka node {node_id} (pid {pid}) survived SIGKILL for 10 s")
            time.sleep(0.05)
        node.pid = None

    def restart(self, node_id: int, timeout_s: float = 90.0) -> None:
        """Start a stopped or killed node again on its ports and data folder, as a supervisor would."""
        node = self.nodes[node_id]
        if node.pid is not None:
            raise ServiceFailed(f"Kafka node {node_id} is still running (pid {node.pid})")
        node.start(timeout_s)

    def admin(self, node_id: int | None = None) -> AdminClient:
        """A client of the whole cluster, or of one node (its metadata requests go to that node)."""
        servers = self.bootstrap_servers if node_id is None else self.nodes[node_id].bootstrap_servers
        return AdminClient({"bootstrap.servers": servers, "log_level": 0})

    def partitions(
        self, topic: str, timeout_s: float = 10.0, node_id: int | None = None
    ) -> dict[int, PartitionMetadata]:
        """The topic's partitions as the cluster's (or one node's) metadata describes them now."""
        metadata = self.admin(node_id).list_topics(topic, timeout=timeout_s).topics[topic]
        if metadata.error is not None:
            raise ServiceFailed(f"no metadata for topic {topic!r}: {metadata.error}")
        return dict(metadata.partitions)

    def leader_of(self, topic: str, partition: int) -> int:
        """The node leading ``partition`` of ``topic`` now (-1 while a leader is being elected)."""
        return self.partitions(topic)[partition].leader

    def wait_in_sync(self, topic: str, timeout_s: float = 60.0) -> None:
        """Wait until every running node serves ``topic`` with a leader and all replicas in sync for each
        partition.

        Each node is asked on its own: metadata reaches the nodes one by one, and a client that asks a
        node that has not heard of a new topic yet gets UNKNOWN_TOPIC_OR_PART.
        """
        deadline = time.monotonic() + timeout_s
        views: dict[int, object] = {}
        while True:
            for n, node in self.nodes.items():
                if node.pid is None:
                    continue
                try:
                    parts = self.partitions(topic, node_id=n)
                except ServiceFailed as exc:
                    views[n] = str(exc)
                    continue
                synced = parts and all(
                    p.leader >= 0 and sorted(p.isrs) == sorted(p.replicas) for p in parts.values()
                )
                views[n] = (
                    True if synced else {i: (p.leader, p.replicas, p.isrs) for i, p in sorted(parts.items())}
                )
            if all(view is True for view in views.values()):
                return
            if time.monotonic() > deadline:
                raise ServiceFailed(
                    f"topic {topic!r} not fully in sync after {timeout_s:g} s; per node, the topic's "
                    f"(leader, replicas, isr) per partition: {views}"
                )
            time.sleep(0.2)

    def prefer_leaders(self, topic: str, timeout_s: float = 30.0) -> None:
        """Hand each partition of ``topic`` back to its preferred replica, as Kafka's periodic leader
        rebalance does after a node's return (every leader.imbalance.check.interval.seconds, 300 s)."""
        admin = self.admin()
        partitions = [TopicPartition(topic, p) for p in self.partitions(topic)]
        results = admin.elect_leaders(ElectionType.PREFERRED, partitions).result(timeout=timeout_s)
        # ELECTION_NOT_NEEDED: the preferred replica leads already.
        failed = {
            tp.partition: err
            for tp, err in results.items()
            if err is not None and err.code() != KafkaError.ELECTION_NOT_NEEDED
        }
        if failed:
            raise ServiceFailed(f"preferred leader election on {topic!r} failed: {failed}")
        deadline = time.monotonic() + timeout_s
        while any(p.leader != p.replicas[0] for p in self.partitions(topic).values()):
            if time.monotonic() > deadline:
                raise ServiceFailed(
                    f"the preferred replicas of {topic!r} did not take over in {timeout_s:g} s"
                )
            time.sleep(0.2)
