"""Session fixtures: the real local services the integration tests talk to, started on free ports.

A missing prerequisite (Java, Maven, Go) raises MissingPrerequisite with what to install, so a test that
needs the service errors loudly instead of skipping.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stock_platform.services.fakesnow import FakesnowServer
from stock_platform.services.kafka import KafkaBroker
from stock_platform.services.s3 import S3Server


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka")).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fakesnow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakesnowServer]:
    server = FakesnowServer(tmp_path_factory.mktemp("fakesnow")).start()
    try:
        yield server
    finally:
        server.stop()
