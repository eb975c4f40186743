"""The tests' Kafka-protocol broker (openaudience.bench.sandbox), and a reader that takes
every message of a topic by partition with assign() (tansu has no consumer groups to speak of)."""

from __future__ import annotations

import time

from openaudience.bench.sandbox import LocalBroker, start_broker

__all__ = ["start_broker", "read_all"]


def read_all(broker: LocalBroker, topic: str, expected: int, timeout_s: float = 60) -> list:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "oa-tests",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    out, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = consumer.consume(10_000, 0.5)
        out += [m for m in batch if m.error() is None]
        if len(out) >= expected and not batch:
            break
    consumer.close()
    return out
