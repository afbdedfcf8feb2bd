"""Start, stop, restart, concurrency, and the `meterline serve` command as a real process."""

from __future__ import annotations

import signal
import socket
import sqlite3
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from meterline.cli import main
from meterline.server import ReferenceServer
from tests.server.helpers import API_KEY, Clock, event, serve_process, stamp

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_concurrent_posts_lose_and_double_count_nothing(
    reference: ReferenceServer, api: httpx.Client
) -> None:
    """Eight threads posting overlapping keys store each key exactly once."""
    threads, batches, size = 8, 10, 50
    ingested: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            with httpx.Client(base_url=reference.url, headers=AUTH, timeout=10) as client:
                for b in range(batches):
                    # Thread n shares every key with thread n ^ 1: half of all posts collide.
                    keys = [f"k{n // 2}-{b}-{i}" for i in range(size)]
                    body = {"events": [event(k) for k in keys]}
                    response = client.post("/ingest", json=body, params={"debug": "true"})
                    with lock:
                        ingested.extend(response.json()["debug"]["ingested"])
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=30)
    assert not errors
    unique = threads // 2 * batches * size
    assert len(ingested) == len(set(ingested)) == unique
    assert reference.event_count() == unique
    posts = [r for r in reference.requests if r.path == "/v1/ingest"]
    assert len(posts) == threads * batches
    assert all(r.status == 200 for r in posts)


def test_restart_on_the_same_port_and_file_keeps_the_data(tmp_path: Path, clock: Clock) -> None:
    """stop() then start() reuses the port and the database; a keep-alive client carries on."""
    server = ReferenceServer(db=tmp_path / "usage.db", api_keys=[API_KEY], clock=clock)
    with server, httpx.Client(base_url=server.url, headers=AUTH) as client:
        url = server.url
        client.post("/ingest", json={"events": [event("a")]})
        server.restart()
        assert server.url == url
        response = client.post("/ingest", json={"events": [event("a"), event("b")]})
        assert response.status_code == 200
        assert server.event_count() == 2
    assert not server.running
    with ReferenceServer(db=tmp_path / "usage.db", clock=clock) as again:
        assert [e["id"] for e in again.events()] == ["a", "b"]


def test_a_memory_database_starts_empty_after_restart(clock: Clock) -> None:
    """With db=":memory:" a restart begins with no events."""
    with ReferenceServer(api_keys=[API_KEY], clock=clock) as server:
        httpx.post(f"{server.url}/ingest", json={"events": [event("a")]}, headers=AUTH)
        assert server.event_count() == 1
        server.restart()
        assert server.event_count() == 0


def test_stop_closes_idle_keep_alive_connections(
    reference: ReferenceServer, api: httpx.Client
) -> None:
    """stop() returns promptly even while a client holds an idle keep-alive connection."""
    assert api.get("/health").status_code == 200
    reference.stop()
    assert not reference.running
    reference.stop()  # a second stop does nothing
    with pytest.raises(httpx.TransportError):
        api.get("/health")


def test_lifecycle_misuse_is_refused(reference: ReferenceServer) -> None:
    """Starting twice raises, read helpers need a running server, bad limits are refused."""
    with pytest.raises(RuntimeError, match="already running"):
        reference.start()
    reference.stop()
    with pytest.raises(RuntimeError, match="start"):
        reference.event_count()
    with pytest.raises(ValueError, match="max_body_bytes"):
        ReferenceServer(max_body_bytes=0)
    with pytest.raises(ValueError, match="duration"):
        ReferenceServer(grace_period="soon")


def test_a_database_from_something_else_is_refused(tmp_path: Path) -> None:
    """A SQLite file with another schema version is not silently reused."""
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 42")
    db.close()
    with pytest.raises(sqlite3.DatabaseError, match="schema version 42"):
        ReferenceServer(db=path).start()


def test_repr_and_ipv6_urls() -> None:
    """The URL brackets IPv6 hosts; repr shows the URL and the state."""
    server = ReferenceServer(host="::1", port=9)
    assert server.url == "http://[::1]:9/v1"
    assert "stopped" in repr(server)


# -- the command line -----------------------------------------------------------------------------


def ingest_and_count(url: str, *events: dict[str, Any]) -> int:
    """Post ``events`` and return how many events the usage report counts."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=10) as client:
        if events:
            response = client.post("/ingest", json={"events": list(events)})
            assert response.status_code == 200, response.text
        start, end = stamp(-86400, at=_now()), stamp(86400, at=_now())
        usage = client.get("/usage", params={"start": start, "end": end}).json()["usage"]
    return sum(row["count"] for row in usage)


def _now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


@pytest.mark.slow
def test_serve_runs_until_sigterm_and_keeps_data_across_restarts(tmp_path: Path) -> None:
    """`meterline serve` prints its URL, logs no key, exits 0 on SIGTERM; a restart keeps data."""
    db = str(tmp_path / "usage.db")
    with serve_process("--port", "0", "--db", db, "--api-key", API_KEY, "--verbose") as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.url.endswith("/v1")
        assert ingest_and_count(server.url, event("a", timestamp=stamp(at=_now()))) == 1
        wrong = {"Authorization": "Bearer wrong-secret"}
        assert httpx.post(f"{server.url}/ingest", json={}, headers=wrong).status_code == 401
        port = str(server.port)
        assert server.stop(signal.SIGTERM) == 0
    assert '"POST /v1/ingest HTTP/1.1" 401' in server.stderr
    assert API_KEY not in server.stderr
    assert "wrong-secret" not in server.stderr
    assert "every bearer token" not in server.stderr
    with serve_process("--port", port, "--db", db, "--api-key", API_KEY) as again:
        assert str(again.port) == port
        assert ingest_and_count(again.url) == 1
        assert again.stop(signal.SIGINT) == 0


@pytest.mark.slow
def test_serve_without_keys_warns_and_verbose_logs_requests() -> None:
    """Without --api-key a WARNING goes to stderr; --verbose logs each request line."""
    with serve_process("--port", "0", "--db", ":memory:", "--verbose") as server:
        assert httpx.get(f"{server.url}/health").status_code == 200
        assert server.stop() == 0
    assert "WARNING" in server.stderr
    assert "every bearer token is accepted" in server.stderr
    assert '"GET /v1/health HTTP/1.1" 200' in server.stderr


@pytest.mark.slow
def test_python_dash_m_meterline_server_serves() -> None:
    """`python -m meterline.server` runs the same server as `meterline serve`."""
    with serve_process("--port", "0", "--db", ":memory:", module="meterline.server") as server:
        assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
        assert server.stop(signal.SIGINT) == 0


def test_serve_reports_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    """A port already in use makes `serve` log an error and return 1 instead of crashing."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        assert main(["serve", "--port", port, "--db", ":memory:", "--api-key", "k"]) == 1
    assert "cannot listen" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [["serve", "--grace-period", "soon"], ["serve", "--port", "70000"], ["bogus"], []],
    ids=["bad-duration", "bad-port", "unknown-command", "no-command"],
)
def test_bad_command_lines_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """argparse refuses bad options and a missing or unknown command with exit code 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert "usage: meterline" in capsys.readouterr().err


def test_serve_stops_on_keyboard_interrupt_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process, `serve` prints the ready line; Ctrl-C stops it (exit 0), handlers restored."""
    import meterline.server._main as runner

    seen: list[str] = []

    def interrupt() -> None:
        seen.append(capsys.readouterr().out)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_wait_for_signal", interrupt)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert main(["serve", "--port", "0", "--db", ":memory:", "--grace-period", "1h30m"]) == 0
    assert seen[0].startswith("meterline reference server listening on http://127.0.0.1:")
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
