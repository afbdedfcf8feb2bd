"""The relay in this process: another format stops it, stop() is bounded, a 429 pauses the
whole group, and the API key is never shown."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import meterline
from meterline.relay import FormatMismatchError
from meterline.server import ReferenceServer
from tests.support.fault_server import FaultServer, Request, Step
from tests.support.kafka import Broker, committed

from .conftest import (
    API_KEY,
    CLI_GROUP_SETTINGS,
    fill,
    high_watermarks,
    wait_for,
)

NONE = -1001  # a partition the group never committed


def server_keys(srv: ReferenceServer) -> set[str]:
    return {e["id"] for e in srv.events()}


def all_committed(broker: Broker, topic: str, group: str) -> bool:
    high = high_watermarks(broker, topic)
    return committed(broker, topic, group, high) == high


def ready_files(journal_dir: Path) -> list[Path]:
    return sorted((journal_dir / "ready").glob("*.mlj")) if (journal_dir / "ready").exists() else []


def test_another_destinations_format_stops_the_relay_and_commits_nothing_past_it(
    broker, group, srv, relays, tmp_path
):
    one = broker.create_topic(partitions=1)
    before = fill(broker, one, 20, tmp_path / "p1")
    fill(
        broker, one, 1, tmp_path / "p2", destination=meterline.destinations.Kafka(downstream="lago")
    )
    fill(broker, one, 20, tmp_path / "p3")
    running = relays(broker.url(one), group, base_url=srv.url)
    running.thread.join(30)
    assert not running.thread.is_alive()
    assert running.error, "run() returned instead of raising"
    error = running.error[0]
    assert isinstance(error, FormatMismatchError)
    assert isinstance(error, meterline.ConfigError)
    assert "'lago'" in str(error), error
    assert f"{one}[0]@20" in str(error), error
    offset = committed(broker, one, group, [0])[0]
    assert offset == NONE or offset <= 20, offset
    assert server_keys(srv) <= set(before)


def test_the_command_exits_2_on_another_destinations_format(broker, group, srv, tmp_path):
    one = broker.create_topic(partitions=1)
    fill(
        broker, one, 1, tmp_path / "p", destination=meterline.destinations.Kafka(downstream="lago")
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "meterline",
            "relay",
            "--from",
            broker.url(one),
            "--group",
            group,
            "--to",
            "orb",
            "--base-url",
            srv.url,
            "--journal-dir",
            str(tmp_path / "j"),
            *CLI_GROUP_SETTINGS,
        ],
        env={"METERLINE_API_KEY": API_KEY, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert proc.returncode == 2, proc.stderr
    assert "'lago'" in proc.stderr, proc.stderr
    assert "--to lago" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert API_KEY not in proc.stderr
    assert committed(broker, one, group, [0]) == {0: NONE}


def test_stop_while_holding_returns_within_its_bounds_and_commits_nothing(
    broker, topic, group, relays, tmp_path
):
    fill(broker, topic, 100, tmp_path / "producer")
    hanging = FaultServer().start()
    hanging.always = Step(hang=True)
    try:
        timeout, shutdown = 1.5, 1.0
        running = relays(
            broker.url(topic),
            group,
            base_url=hanging.url,
            timeout=timeout,
            shutdown_timeout=shutdown,
            probe_interval=0.3,
            retry_attempts=1,
        )
        wait_for(lambda: len(hanging.requests_snapshot()) >= 2, 30, "a second request in flight")
        assert running.latest().holding > 0, running.progress
        took = running.stop(deadline=30)
        # The request in flight ends at its timeout at worst; leaving the group adds a little.
        assert took < shutdown + timeout + 2.0, took
        assert running.result, running.error
        assert running.result[0].committed == 0, running.result
        assert committed(broker, topic, group, range(4)) == dict.fromkeys(range(4), NONE)
        assert not (tmp_path / "relay-journal-0" / "ready").exists() or not ready_files(
            tmp_path / "relay-journal-0"
        )
    finally:
        hanging.stop()


def test_a_429_pauses_every_member_of_the_group(broker, topic, group, srv, relays, tmp_path):
    one = relays(broker.url(topic), group, base_url=srv.url)
    two = relays(broker.url(topic), group, base_url=srv.url)
    wait_for(
        lambda: (
            one.latest().partitions
            and two.latest().partitions
            and set(one.latest().partitions) | set(two.latest().partitions) == {0, 1, 2, 3}
            and not set(one.latest().partitions) & set(two.latest().partitions)
        ),
        30,
        "both members share the partitions",
    )
    srv.fail_next(429, times=1, retry_after=1)
    keys = fill(broker, topic, 400, tmp_path / "producer")
    wait_for(lambda: srv.event_count() == 400, 40, "all delivered after the pause")
    wait_for(lambda: one.latest().committed + two.latest().committed == 400, 20, "all committed")
    assert server_keys(srv) == set(keys)
    members = [one.stats(), two.stats()]
    published = [s.pauses_published for s in members]
    assert sorted(published) == [0, 1], members
    # The member that was never answered 429 took in the pause the other published.
    quiet = members[published.index(0)]
    assert quiet.pauses_heard >= 1, members
    assert all_committed(broker, topic, group)


def test_the_api_key_is_never_shown(broker, topic, group, relays, tmp_path, caplog):
    secret = "sk-live-relay-SECRET-0123456789"
    echo = FaultServer().start()

    def echoing(request: Request) -> bytes:
        auth = request.headers.get("authorization", "")
        return f'{{"title": "bad gateway", "detail": "you sent {auth}"}}'.encode()

    echo.always = Step(status=502, body=echoing)
    caplog.set_level(logging.DEBUG)
    try:
        fill(broker, topic, 50, tmp_path / "producer")
        running = relays(
            broker.url(topic),
            group,
            api_key=secret,
            base_url=echo.url,
            probe_interval=0.2,
            retry_attempts=2,
            retry_deadline=1.0,
        )
        assert secret not in repr(running.relay)
        wait_for(lambda: len(echo.requests_snapshot()) >= 3, 30, "several answers echoing the key")
        wait_for(lambda: "you sent" in running.latest().last_error, 10, "the echo in last_error")
        assert any(r.authorization == f"Bearer {secret}" for r in echo.requests_snapshot())
        stats = running.stats()
        assert secret not in stats.last_error, stats.last_error
        assert secret not in repr(stats)
        assert all(secret not in s.last_error for s in running.progress)
        running.stop()
        assert secret not in repr(running.result[0])
        assert "holding" in caplog.text
        assert secret not in caplog.text
    finally:
        echo.stop()


def test_stats_from_another_thread_answers_promptly(broker, topic, group, srv, relays, tmp_path):
    """stats() from another thread never waits behind run()'s consume() calls."""
    fill(broker, topic, 10, tmp_path / "producer")
    running = relays(broker.url(topic), group, base_url=srv.url)
    wait_for(lambda: running.latest().committed == 10, 30, "all committed")
    slowest = [0.0]

    def ask() -> None:
        end = time.monotonic() + 3
        while time.monotonic() < end:
            start = time.monotonic()
            running.relay.stats()
            slowest[0] = max(slowest[0], time.monotonic() - start)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    asker.join(5)
    assert not asker.is_alive(), "a stats() call did not return within 5 s"
    assert slowest[0] < 1.0, f"a stats() call took {slowest[0]:.1f} s"


def test_a_rebalance_during_an_outage_leaves_no_partition_behind(
    broker, topic, group, relays, tmp_path
):
    """One member holds a batch while the server is down; a second joins (the partitions a
    member had paused are revoked and assigned again), then leaves. Once the server is back,
    every key arrives and every partition is committed to its end: no partition stays
    paused, and nothing taken early under an old assignment is skipped."""
    srv = ReferenceServer(api_keys=[API_KEY]).start()
    port = srv.port
    try:
        first = fill(broker, topic, 200, tmp_path / "producer-1")
        one = relays(broker.url(topic), group, base_url=srv.url, probe_interval=0.3)
        wait_for(lambda: srv.event_count() == 200, 30, "the first events delivered")
        srv.stop()
        second = fill(broker, topic, 200, tmp_path / "producer-2")
        wait_for(lambda: one.latest().holding > 0, 20, "the member holds a batch")
        two = relays(broker.url(topic), group, base_url=srv.url, probe_interval=0.3)
        wait_for(
            lambda: len(one.latest().partitions) == 2 and len(two.latest().partitions) == 2,
            30,
            "the second member took half the partitions",
        )
        third = fill(broker, topic, 200, tmp_path / "producer-3")
        two.relay.stop()
        two.thread.join(20)
        srv = ReferenceServer(api_keys=[API_KEY], port=port).start()  # a new, empty store
        wanted = set(second) | set(third)
        wait_for(lambda: wanted <= server_keys(srv), 40, "every held and later event arrived")
        wait_for(lambda: all_committed(broker, topic, group), 20, "every partition committed")
        assert set(first) & server_keys(srv) <= set(first)  # resends of old ones are fine
    finally:
        srv.stop()
