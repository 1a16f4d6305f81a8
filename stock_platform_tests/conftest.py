"""Session fixtures: the real local services the integration tests talk to, started on free ports.

A missing prerequisite (Java, Maven, Go, PostgreSQL) raises MissingPrerequisite with what to install, so a
test that needs the service errors loudly instead of skipping.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from stock_platform.services.fakesnow import FakesnowServer
from stock_platform.services.kafka import KafkaBroker
from stock_platform.services.postgres import PostgresServer
from stock_platform.services.s3 import S3Server

# Per-example wall-time limits measure the machine, not the code: on 2 shared cores with a broker and dbt
# running beside the tests, hypothesis' 200 ms deadline and too-slow health check would fail at random.
settings.register_profile("stock_platform", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("stock_platform")


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


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path_factory.mktemp("postgres")).start()
    try:
        yield server
    finally:
        server.stop()
