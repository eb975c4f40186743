"""Events from a Kafka topic, for reporters that already stream: each message's value is one
behaviour-event message of the HTTP model (or a JSON array of them), judged as events of one
channel and appended to the same event log as the collector's requests.

The reader takes every partition with assign() and keeps its own offsets (OA_HOME/events/
kafka-<topic>.json), stored after the batch they cover is on disk: a crash in between reads the
batch again, and the log, which stores an event it holds nowhere, keeps it once. A message that
is not JSON or not a valid event is logged (topic, partition, offset, why) and skipped.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from openaudience.core.errors import UserError
from openaudience.events import messages as m
from openaudience.events.source import Registry

POLL_MESSAGES = 500
log = logging.getLogger("oa.events")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def offsets_path(home: Path, topic: str) -> Path:
    return home / "events" / f"kafka-{topic}.json"


class TopicReader:
    def __init__(self, bootstrap: str, topic: str, channel: str, registry: Registry, home: Path,
                 store: Callable[[list[dict]], object]) -> None:
        if not _TOPIC.fullmatch(topic):
            raise UserError(f"--kafka-topic {topic!r} is not a topic name (letters, digits, . _ -)")
        if channel not in registry.channels:
            raise UserError(f"--kafka-channel {channel!r} is no channel of events/*.yml "
                            f"(the channels: {', '.join(sorted(registry.channels))})")
        self.bootstrap, self.topic, self.channel = bootstrap, topic, channel
        self.registry, self.home, self.store = registry, home, store
        self.stop = threading.Event()
        self.read = self.refused = 0

    def _offsets(self) -> dict[int, int]:
        path = offsets_path(self.home, self.topic)
        if not path.exists():
            return {}
        try:
            return {int(k): int(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError, AttributeError) as exc:
            raise UserError(f"{path} is unreadable ({exc}); delete it to read the topic from its start "
                            "(the log keeps each event once)") from None

    def _save(self, offsets: dict[int, int]) -> None:
        path = offsets_path(self.home, self.topic)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({str(k): v for k, v in sorted(offsets.items())}))
        tmp.replace(path)

    def run(self) -> None:
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        offsets = self._offsets()
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"oa-events-{self.topic}",
                             "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        try:
            while not self.stop.is_set():
                try:
                    meta = consumer.list_topics(self.topic, timeout=5).topics.get(self.topic)
                except KafkaException as exc:
                    log.warning("kafka %s: %s; trying again", self.bootstrap, exc)
                    time.sleep(1)
                    continue
                if meta is not None and meta.error is None and meta.partitions:
                    break
                time.sleep(1)  # the topic is not there yet
            else:
                return
            consumer.assign([TopicPartition(self.topic, p, offsets.get(p, 0)) for p in meta.partitions])
            while not self.stop.is_set():
                batch = consumer.consume(POLL_MESSAGES, 0.2)
                records: list[dict] = []
                for msg in batch:
                    if msg.error() is not None:
                        log.warning("kafka %s: %s", self.topic, msg.error())
                        continue
                    records.extend(self._judge(msg))
                    offsets[msg.partition()] = msg.offset() + 1
                if records:
                    self.store(records)  # on disk when this returns
                if batch:
                    self._save(offsets)
        finally:
            consumer.close()

    def _judge(self, msg) -> list[dict]:
        where = f"{self.topic}[{msg.partition()}]@{msg.offset()}"
        try:
            value = json.loads(msg.value() or b"")
        except ValueError:
            self.refused += 1
            log.warning("kafka %s: not JSON; skipped", where)
            return []
        items = value if isinstance(value, list) else [value]
        judged = m.judge_events(items, self.registry, self.channel)
        self.read += len(items)
        for e in judged.errors:
            self.refused += 1
            log.warning("kafka %s: message %s refused: %s", where, e["index"], e["errorDesc"])
        return judged.records
