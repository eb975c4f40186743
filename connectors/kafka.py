"""Kafka: one JSON message per member change, keyed by the id, from an idempotent producer.

    key:     the id as sent (so a member's changes stay in order on one partition)
    value:   {"audience": ..., "version": 3, "op": "add" | "remove", "id_type": "mobile",
              "id": "13800000000", "ts": "2026-06-30T02:00:00.123Z", "idempotency_key": "..."}
    headers: idempotency-key, destination

The producer's idempotence (acks=all, enable.idempotence) keeps the broker from writing a
message twice when the client retries inside a run; across a crash and resume the same change
is produced again with the same idempotency key, which consumers keep to act once.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from dataclasses import dataclass, field

from connectors.base import (
    ID_FORMS,
    Capabilities,
    Connector,
    ConnectorConfigError,
    Member,
    Outcome,
    TransientError,
)
from connectors.identifiers import audience_id_types

AUDIENCE_ID_TYPES = audience_id_types()


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str
    topic: str
    audience: str
    version: int
    destination: str
    timeout_s: float = 30.0
    client: dict[str, str] = field(default_factory=dict)  # security settings, passwords included


class KafkaConnector(Connector):
    capabilities = Capabilities(
        channel="kafka",
        id_forms={t: ID_FORMS for t in AUDIENCE_ID_TYPES},
        supports_removals=True,
        is_message=False,
        max_batch_size=100_000,
    )

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.producer = None
        self.lock = threading.Lock()

    def open(self) -> None:
        from confluent_kafka import KafkaException, Producer

        config = {"bootstrap.servers": self.settings.bootstrap_servers, "enable.idempotence": True,
                  "acks": "all", "linger.ms": 20, "batch.num.messages": 10_000,
                  "message.timeout.ms": int(self.settings.timeout_s * 1000),
                  "client.id": f"openaudience-{self.settings.destination}", **self.settings.client}
        self.producer = Producer(config)
        try:
            # every topic: asking for one by name would make a broker that auto-creates create it
            topics = self.producer.list_topics(timeout=self.settings.timeout_s).topics
        except KafkaException as exc:
            raise TransientError(f"brokers {self.settings.bootstrap_servers} did not answer: {exc}") from None
        meta = topics.get(self.settings.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise ConnectorConfigError(
                f"destination {self.settings.destination}: topic {self.settings.topic!r} "
                f"does not exist on {self.settings.bootstrap_servers}; create it first")

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush(self.settings.timeout_s)
            self.producer = None

    def deliver(self, batch: list[Member], batch_no: int = 0) -> list[Outcome]:
        from confluent_kafka import KafkaError

        if self.producer is None:
            self.open()
        ts = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        results: dict[str, Outcome] = {}
        # one callback that finds the member by its message key (its id), while ids are unique in
        # the batch (a replay may hold one id under two keys: then one callback per message)
        keys = {m.id_value.encode(): m.key for m in batch}
        unique = len(keys) == len(batch)

        def done(err, msg, key: str | None = None) -> None:
            key = key or keys[msg.key()]
            if err is None:
                results[key] = Outcome(key, True, "OK")
            else:
                # a message purged from the local queue after a timeout was never written: retry it
                retry = err.retriable() or err.code() == KafkaError._PURGE_QUEUE
                results[key] = Outcome(key, False, "retriable" if retry else err.name(), err.str())

        # the constant part of every message once; json.dumps only for the values that vary
        head = json.dumps({"audience": self.settings.audience, "version": self.settings.version,
                           "ts": ts}, separators=(",", ":"))[:-1]
        topic, destination = self.settings.topic, self.settings.destination.encode()
        with self.lock:  # one flush per batch; batches from several threads queue here
            for m in batch:
                value = (f'{head},"op":"{m.op}","id_type":{json.dumps(m.id_type)},'
                         f'"id":{json.dumps(m.id_value)},"idempotency_key":"{m.key}"}}')
                while True:
                    try:
                        self.producer.produce(
                            topic, key=m.id_value.encode(), value=value.encode(),
                            headers=[("idempotency-key", m.key.encode()), ("destination", destination)],
                            on_delivery=done if unique else
                            (lambda err, msg, key=m.key: done(err, msg, key)))
                        break
                    except BufferError:  # the local queue is full: let it drain
                        self.producer.poll(0.05)
            left = self.producer.flush(self.settings.timeout_s)
            if left:  # drop what is still queued, so that the retry does not add a second copy
                self.producer.purge(in_queue=True, in_flight=False)
                self.producer.flush(self.settings.timeout_s)
        if left:
            raise TransientError(f"{left} message(s) unacknowledged after {self.settings.timeout_s:g} s",
                                 partial=[o for o in results.values() if o.ok])
        outcomes = [results.get(m.key, Outcome(m.key, False, "retriable", "no delivery report"))
                    for m in batch]
        retry = [o for o in outcomes if not o.ok and o.code == "retriable"]
        if retry:
            raise TransientError(f"{len(retry)} message(s) not written: {retry[0].message}",
                                 partial=[o for o in outcomes if o.ok or o.code != "retriable"])
        return outcomes
