"""The in-memory Kafka topic replaces every broker call of KafkaResource, and nothing else.

Read from the source: a KafkaResource method that builds a client, a TopicPartition, or calls the
consumer (other than closing it) talks to the broker, so FakeKafkaResource must override it; every other
method must stay the production code, or the fast tests would test the fake's rules instead of ours.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

from stock_platform.resources import kafka
from stock_platform_tests.fake_kafka import FakeKafkaResource

BROKER_NAMES = {"Consumer", "AdminClient", "TopicPartition", "read_ranges", "require_append_time"}


def talks_to_the_broker(method: ast.FunctionDef) -> bool:
    """Whether the body (not the type annotations) uses a broker client."""
    for node in (n for statement in method.body for n in ast.walk(statement)):
        if isinstance(node, ast.Name) and node.id in BROKER_NAMES:
            return True
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "consumer"
            and node.attr != "close"
        ):
            return True
    return False


def test_the_fake_overrides_exactly_the_methods_that_talk_to_the_broker():
    tree = ast.parse(textwrap.dedent(inspect.getsource(kafka.KafkaResource)))
    methods = [n for n in tree.body[0].body if isinstance(n, ast.FunctionDef)]  # type: ignore[attr-defined]
    io = {m.name for m in methods if talks_to_the_broker(m)}
    overridden = {
        name
        for name, value in vars(FakeKafkaResource).items()
        if callable(value) and not name.startswith("__")
    }
    overridden -= {"_cluster"}  # the fake's own lookup of its in-memory cluster

    assert io == overridden, (
        f"broker calls not replaced by the fake: {sorted(io - overridden)}; production rules the fake "
        f"replaces: {sorted(overridden - io)}"
    )
