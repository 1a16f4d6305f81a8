"""Container healthchecks for docker-compose.yml that need more than the images' own tools.

python:3.11-slim has no curl, and the producer exposes no port, so these run with the project's Python:

    python /opt/stock_platform/docker/healthcheck.py http http://127.0.0.1:3000/server_info
    python /opt/stock_platform/docker/healthcheck.py kafka-topic

Exit status 0 means healthy; the reason for a failure goes to stderr (shown by `docker inspect`).
"""

from __future__ import annotations

import os
import sys
import urllib.request


def check_http(url: str) -> None:
    with urllib.request.urlopen(url, timeout=5) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered HTTP {response.status}")


def check_kafka_topic() -> None:
    """The producer is useful only while its broker answers and its topic exists."""
    from confluent_kafka.admin import AdminClient

    topic = os.environ["KAFKA_TOPIC"]
    # log_level 0: librdkafka would otherwise print a line per reconnect into the health log.
    admin = AdminClient({"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"], "log_level": 0})
    # All topics, not list_topics(topic=...): asking for one topic by name can auto-create it.
    found = admin.list_topics(timeout=5).topics.get(topic)
    if found is None or found.error is not None:
        raise RuntimeError(f"topic {topic!r} is not available: {found.error if found else 'missing'}")


def main(argv: list[str]) -> int:
    try:
        match argv:
            case ["http", url]:
                check_http(url)
            case ["kafka-topic"]:
                check_kafka_topic()
            case _:
                print("usage: healthcheck.py http URL | kafka-topic", file=sys.stderr)
                return 2
    except Exception as exc:  # any failure is "unhealthy"; say why
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
