"""A platform instance of its own for a test: its own topic, consumer group, Dagster home, lake and
warehouse file, talking to the session's Kafka broker."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from stock_platform.runner import platform_defaults, prepare_dagster_home


def isolated_platform_env(bootstrap_servers: str, home: Path, partitions: int, prefix: str) -> dict[str, str]:
    """Create a fresh topic and Dagster home under ``home``; return the environment for Dagster processes."""
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    settings = platform_defaults(home, {"KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers})
    prepare_dagster_home(Path(settings["DAGSTER_HOME"]))
    # The test's own values win over whatever the calling shell has set.
    return {
        **os.environ,
        **settings,
        "KAFKA_TOPIC": topic,
        "KAFKA_INGEST_GROUP": f"ingest-{topic}",
        "OBJECT_STORE": "local",
        "WAREHOUSE": "duckdb",
    }
