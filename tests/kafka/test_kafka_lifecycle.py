"""destination="kafka" across real process lifecycles: exit without close(), fork, kill -9."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import meterline
from tests.kafka.helpers import ensure_topic, journal_keys, read_topic, topic_keys
from tests.lifecycle.helpers import Proc, child_env, python
from tests.support.journal import ready_events
from tests.support.kafka import Broker, free_port

CHILD = Path(__file__).with_name("child.py")

pytestmark = pytest.mark.slow


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.kill_group()


def run(procs: list[Proc], *args: str | Path, stdin: bool = False) -> Proc:
    proc = python(CHILD, *args, env=child_env(), stdin=stdin)
    procs.append(proc)
    return proc


def line(proc: Proc, needle: str) -> list[str]:
    """The words of the first output line of an exited process that starts with ``needle``."""
    for text in proc.lines:
        if text.startswith(needle):
            return text.split()
    raise AssertionError(f"no line {needle!r}: {proc.output()}")


COLD_CLOSE_BUG = (
    "bug: close() (and the exit hook) treats a send taking over 0.5 s as a hung endpoint and "
    "journals every waiting batch; a cold Kafka producer's first send (connect, metadata, "
    "producer id) takes about that long, so a healthy broker gets one batch and the rest is "
    "journaled (most runs; a fast connection sometimes beats the limit, so not strict)"
)


@pytest.mark.timeout(60)
def test_exit_without_close_loses_nothing(
    broker: Broker, topic: str, journal_dir: Path, procs: list[Proc]
) -> None:
    n = 2000
    proc = run(procs, "exit", broker.url(topic), journal_dir, str(n))
    started = time.monotonic()
    assert proc.wait(timeout=30) == 0, proc.output()
    assert time.monotonic() - started < 20  # one bounded shutdown (5 s) plus start-up
    in_topic = topic_keys(read_topic(broker.address, topic, expect=n, deadline=5))
    on_disk = journal_keys(journal_dir)
    # Every key exactly once: in the topic, or on disk for the next start.
    assert sorted([*in_topic, *on_disk]) == sorted(f"exit-{i}" for i in range(n)), proc.output()
    assert max(in_topic.values()) == 1


@pytest.mark.timeout(60)
def test_exit_without_close_delivers_everything_to_a_healthy_broker(
    broker: Broker, topic: str, journal_dir: Path, procs: list[Proc]
) -> None:
    n = 2000
    proc = run(procs, "exit", broker.url(topic), journal_dir, str(n))
    assert proc.wait(timeout=30) == 0, proc.output()
    counts = topic_keys(read_topic(broker.address, topic, expect=n, deadline=5))
    assert set(counts) == {f"exit-{i}" for i in range(n)}, proc.output()
    assert ready_events(journal_dir) == 0  # delivered, not merely journaled


def test_close_delivers_everything_to_a_healthy_broker(
    broker: Broker, topic: str, journal_dir: Path
) -> None:
    client = meterline.Client(
        destination="kafka", base_url=broker.url(topic), journal_dir=journal_dir, flush_interval=30
    )
    for i in range(2000):
        client.report(f"cust_{i % 5}", "e", {"i": i})
    result = client.close()
    assert (result.sent, result.journaled) == (2000, 0), result


@pytest.mark.timeout(60)
def test_fork_child_and_parent_both_deliver_and_the_child_does_not_hang(
    broker: Broker, topic: str, journal_dir: Path, procs: list[Proc]
) -> None:
    n = 300
    proc = run(procs, "fork", broker.url(topic), journal_dir, str(n))
    assert proc.wait(timeout=45) == 0, proc.output()
    child = line(proc, "child")
    assert child[1] == "0", proc.output()  # the child's flush sent all of its own events
    assert float(child[2]) < 20, proc.output()
    parent = line(proc, "parent")
    assert parent[2] == "0", proc.output()  # nothing pending in the parent
    expected = {
        f"{prefix}-{i}" for prefix in ("parent-before", "child", "parent-after") for i in range(n)
    }
    counts = topic_keys(read_topic(broker.address, topic, expect=len(expected)))
    assert set(counts) == expected, proc.output()
    # The parent's events queued before the fork are sent by the parent only.
    assert max(counts.values()) == 1


@pytest.mark.timeout(60)
def test_kill_9_in_write_ahead_mode_loses_nothing_and_the_next_process_replays(
    brokers: Callable[..., Broker], journal_dir: Path, procs: list[Proc]
) -> None:
    """The broker is not there while the first process runs, so nothing can be delivered:
    write_ahead must have put every event on disk within a few milliseconds of report(),
    long before the send's own retry budget would have spilled anything."""
    n = 2000
    port = free_port()
    name = "wal-" + uuid.uuid4().hex[:8]
    url = f"kafka://127.0.0.1:{port}/{name}"
    first = run(procs, "wal", url, journal_dir, str(n), stdin=True)
    first.expect("reported", timeout=20)
    reported_at = time.monotonic()
    while ready_events(journal_dir) < n:
        assert time.monotonic() - reported_at < 1.0, ready_events(journal_dir)
        time.sleep(0.005)
    first.signal(signal.SIGKILL)
    assert first.wait(timeout=10) == -signal.SIGKILL
    assert sorted(journal_keys(journal_dir)) == sorted(f"wal-{i}" for i in range(n))

    late = brokers(port)
    ensure_topic(late.address, name)
    second = run(procs, "replay", url, journal_dir)
    assert second.wait(timeout=45) == 0, second.output()
    assert line(second, "replayed")[1:] == [str(n), "0"], second.output()
    counts = topic_keys(read_topic(late.address, name, expect=n))
    assert set(counts) == {f"wal-{i}" for i in range(n)}
    assert ready_events(journal_dir) == 0
