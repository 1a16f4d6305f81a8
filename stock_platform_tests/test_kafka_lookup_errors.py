"""Offset lookups during a leader change fail as KafkaUnavailable, naming what was asked, like the
resource's other broker calls (the three-broker failover test sees the real error)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from stock_platform.resources.kafka import KafkaResource, KafkaUnavailable


class LeaderGone:
    """A consumer whose partition leader died: librdkafka raises from the lookups."""

    def _fail(self, *args, **kwargs):
        raise KafkaException(KafkaError(KafkaError._DESTROY, "Broker handle destroyed without termination"))

    get_watermark_offsets = _fail
    offsets_for_times = _fail


def test_lookups_say_kafka_is_unavailable_when_a_leader_is_gone():
    resource = KafkaResource(bootstrap_servers="127.0.0.1:1", topic="quotes", ingest_group="ingest")
    with pytest.raises(KafkaUnavailable, match="watermarks of quotes on 127.0.0.1:1: .*destroyed"):
        resource._watermarks(LeaderGone(), [0, 1])  # type: ignore[arg-type]
    with pytest.raises(KafkaUnavailable, match="offsets_for_times on quotes: .*destroyed"):
        resource._offsets_at(LeaderGone(), [0], 1_000)  # type: ignore[arg-type]
