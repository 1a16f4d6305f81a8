"""Fixtures of the ingestion tests (helpers are in ingest_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stock_platform_tests.kafka_topics import create_topic


@pytest.fixture
def new_topic(kafka_broker) -> Callable[..., str]:
    def create(partitions: int = 2, append_time: bool = False) -> str:
        return create_topic(kafka_broker.bootstrap_servers, "quotes", partitions, append_time)

    return create
