"""The local services are the real thing: a Kafka broker that answers timestamp lookups, an S3 server
that enforces credentials, and a Snowflake stand-in reached through the real connector."""

from __future__ import annotations

import io
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from minio import Minio
from minio.error import S3Error

pytestmark = pytest.mark.integration


def test_kafka_produce_offsets_for_times_consume_round_trip(kafka_broker):
    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    # Kept forever: records stamped in 2023 would otherwise go at the broker's next retention check.
    config = {"retention.ms": "-1"}
    created = admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1, config=config)])
    created[topic].result(timeout=30)

    base_ms = 1_700_000_000_000
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers, "enable.idempotence": True})
    for i in range(10):
        producer.produce(topic, value=f"v{i}".encode(), partition=i % 2, timestamp=base_ms + i * 1000)
    assert producer.flush(30) == 0

    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap_servers, "group.id": "roundtrip",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        # First offset at or after t = base + 4 s on each partition: records 4 (p0) and 5 (p1).
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, base_ms + 4000) for p in (0, 1)], timeout=30
        )
        assert [(tp.partition, tp.offset) for tp in found] == [(0, 2), (1, 2)]

        consumer.assign([TopicPartition(topic, p, 2) for p in (0, 1)])
        values = []
        while len(values) < 6:
            msg = consumer.poll(10)
            assert msg is not None, f"timed out after {values}"
            assert msg.error() is None
            values.append((msg.value().decode(), msg.timestamp()[1]))
        assert sorted(values) == [(f"v{i}", base_ms + i * 1000) for i in range(4, 10)]
    finally:
        consumer.close()


def test_s3_bucket_put_list_get_and_wrong_credentials_refused(s3_server):
    client = Minio(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, secure=False)
    bucket = f"roundtrip-{uuid.uuid4().hex[:8]}"
    client.make_bucket(bucket)
    client.put_object(bucket, "2026/11/28/08/00.ndjson.gz", io.BytesIO(b"payload"), 7)

    assert [o.object_name for o in client.list_objects(bucket, recursive=True)] == [
        "2026/11/28/08/00.ndjson.gz"
    ]
    assert client.get_object(bucket, "2026/11/28/08/00.ndjson.gz").read() == b"payload"

    intruder = Minio(s3_server.endpoint, s3_server.access_key, "not-the-secret", secure=False)
    with pytest.raises(S3Error) as refused:
        intruder.list_objects(bucket).__next__()
    assert refused.value.code in {"SignatureDoesNotMatch", "AccessDenied"}
    stranger = Minio(s3_server.endpoint, "nobody", "nothing", secure=False)
    with pytest.raises(S3Error):
        stranger.list_buckets()


def test_fakesnow_server_speaks_the_snowflake_protocol(fakesnow_server):
    import snowflake.connector

    with snowflake.connector.connect(**fakesnow_server.connection_kwargs()) as conn:
        cur = conn.cursor()
        cur.execute("create database if not exists probe")
        cur.execute("create schema if not exists probe.raw")
        cur.execute("create or replace table probe.raw.t (v variant)")
        cur.execute("""insert into probe.raw.t select parse_json('{"symbol": "AAPL", "c": 1.5}')""")
        assert cur.execute("select v:symbol::varchar, v:c::double from probe.raw.t").fetchall() == [
            ("AAPL", 1.5)
        ]
