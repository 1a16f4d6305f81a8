"""A platform instance of its own for a test: its own topic, consumer group, Dagster home, lake and
warehouse file, talking to the session's Kafka broker."""

from __future__ import annotations

import os
from pathlib import Path

from stock_platform.runner import platform_defaults, prepare_dagster_home
from stock_platform_tests.kafka_topics import create_topic


def isolated_platform_env(bootstrap_servers: str, home: Path, partitions: int, prefix: str) -> dict[str, str]:
    """Create a fresh topic and Dagster home under ``home``; return the environment for Dagster processes."""
    topic = create_topic(bootstrap_servers, prefix, partitions, append_time=True)
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
