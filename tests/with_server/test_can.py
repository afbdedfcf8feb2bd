"""``client.can()`` against the reference server's entitlements (``--plans``), and what it
answers when no usable answer comes (fail-open by default, fail-closed on request)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import meterline
from meterline import Answer, ClientClosedError, ConfigError
from meterline.server import ReferenceServer

SECRET = "sk_live_meterline_can_secret_0123"
PLANS: dict[str, Any] = {
    "default_plan": "free",
    "plans": {
        "free": {"features": {"feature:api": {"limit": 3}}},
        "pro": {"features": {"feature:api": {}}},
    },
    "customers": {"org:acme": {"plan": "pro"}},
}


@pytest.fixture
def reference() -> Iterator[ReferenceServer]:
    with ReferenceServer(api_keys=[SECRET], plans=PLANS) as server:
        yield server


def _client(url: str, tmp_path: Path, **options: Any) -> meterline.Client:
    return meterline.Client(
        api_key=SECRET, base_url=url, journal_dir=tmp_path / "journal", **options
    )


def test_can_reports_the_limit_and_answer_report_spends_it(
    reference: ReferenceServer, tmp_path: Path
) -> None:
    """Tier's flow: can() is ok until the customer's reported usage reaches the plan's limit;
    answer.report() reports the feature through the same client."""
    with _client(reference.url, tmp_path) as client:
        answer = client.can("org:cust", "feature:api")
        assert (answer.ok, answer.limit, answer.used, answer.remaining, answer.error) == (
            True,
            3,
            0,
            3,
            None,
        )
        answer.report()
        answer.report(2)
        assert client.flush(timeout=10).sent == 2
        after = client.can("org:cust", "feature:api")
    assert (after.ok, after.used, after.remaining) == (False, 3, 0)
    assert not after
    quantities = sorted(e["properties"]["quantity"] for e in reference.events())
    assert quantities == [1, 2]
    assert {e["event_name"] for e in reference.events()} == {"feature:api"}


def test_an_unlimited_feature_and_an_ungranted_one(
    reference: ReferenceServer, tmp_path: Path
) -> None:
    """A plan's feature without a limit is ok with limit None; a feature no plan grants is no."""
    with _client(reference.url, tmp_path) as client:
        pro = client.can("org:acme", "feature:api")
        other = client.can("org:acme", "feature:export")
    assert (pro.ok, pro.limit, pro.error) == (True, None, None)
    assert (other.ok, other.limit, other.error) == (False, 0, None)


def test_ids_with_reserved_characters_reach_the_right_entitlement(
    reference: ReferenceServer, tmp_path: Path
) -> None:
    """A customer id with a slash or a space is one path segment, not two."""
    with _client(reference.url, tmp_path) as client:
        answer = client.can("org/a b?", "feature:api")
    assert (answer.ok, answer.limit, answer.error) == (True, 3, None)


def test_a_wrong_key_is_an_error_answer_that_fails_open_without_the_key(
    reference: ReferenceServer, tmp_path: Path
) -> None:
    """A 401 gives ok=True (fail-open, the default) with an error naming the status, never
    the key."""
    with meterline.Client(
        api_key="sk_wrong_key_0000", base_url=reference.url, journal_dir=tmp_path / "j"
    ) as client:
        answer = client.can("org:cust", "feature:api")
    assert answer.ok
    assert answer.error is not None
    assert answer.error.startswith("HTTP 401")
    assert "sk_wrong_key_0000" not in repr(answer) + answer.error


def test_fail_closed_is_an_option_and_a_per_call_choice(
    reference: ReferenceServer, tmp_path: Path
) -> None:
    """can_fail_open=False refuses when no answer comes; fail_open= overrides per call."""
    port = reference.port
    reference.stop()
    url = f"http://127.0.0.1:{port}/v1"
    with _client(url, tmp_path, can_fail_open=False) as client:
        closed = client.can("org:cust", "feature:api", timeout=2)
        opened = client.can("org:cust", "feature:api", timeout=2, fail_open=True)
    assert (closed.ok, opened.ok) == (False, True)
    assert closed.error is not None
    assert SECRET not in closed.error


def test_a_server_without_plans_is_an_error_saying_so(tmp_path: Path) -> None:
    """Against a server started without --plans, the error carries its hint."""
    with ReferenceServer(api_keys=[SECRET]) as server, _client(server.url, tmp_path) as client:
        answer = client.can("org:cust", "feature:api")
    assert answer.ok
    assert answer.error is not None
    assert "--plans" in answer.error


class _Scripted(BaseHTTPRequestHandler):
    """Answers GETs as the test scripts: a status and body, or a hang until released."""

    script: list[tuple[int, bytes, str]]
    release: threading.Event
    seen: list[dict[str, str]]

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers))
        status, body, kind = self.script.pop(0) if self.script else (500, b"", "json")
        if kind == "hang":
            self.release.wait(30)
            return
        self.send_response(status)
        self.send_header("Content-Type", "text/html" if kind == "html" else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def scripted() -> Iterator[tuple[str, type[_Scripted]]]:
    handler = type(
        "Handler", (_Scripted,), {"script": [], "release": threading.Event(), "seen": []}
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/v1", handler
    finally:
        handler.release.set()
        httpd.shutdown()
        httpd.server_close()


def test_a_hung_server_is_cut_at_the_timeout(
    scripted: tuple[str, type[_Scripted]], tmp_path: Path
) -> None:
    """A server that never answers costs at most about ``timeout``: an error answer then."""
    url, handler = scripted
    handler.script.append((200, b"", "hang"))
    with _client(url, tmp_path) as client:
        started = time.monotonic()
        answer = client.can("org:cust", "feature:api", timeout=0.5)
        took = time.monotonic() - started
    assert answer.ok
    assert answer.error is not None
    assert "0.5 s" in answer.error
    assert took < 3


def test_a_foreign_200_or_a_5xx_is_an_error_answer_not_a_verdict(
    scripted: tuple[str, type[_Scripted]], tmp_path: Path
) -> None:
    """An HTML 200 (a portal) and a 503 both give an error answer; the key is sent as a bearer
    header and never shown."""
    url, handler = scripted
    handler.script += [(200, b"<html>login</html>", "html"), (503, b'{"detail":"down"}', "json")]
    with _client(url, tmp_path, can_fail_open=False) as client:
        portal = client.can("org:cust", "feature:api")
        down = client.can("org:cust", "feature:api")
    assert (portal.ok, down.ok) == (False, False)
    assert portal.error is not None
    assert "wrong base_url" in portal.error
    assert down.error == "HTTP 503: down"
    assert handler.seen[0]["Authorization"] == f"Bearer {SECRET}"


def test_a_huge_answer_is_not_read_whole(
    scripted: tuple[str, type[_Scripted]], tmp_path: Path
) -> None:
    """A body past the cap is cut, so it does not parse: an error answer, no memory blow-up."""
    url, handler = scripted
    handler.script.append((200, b'{"ok": true, "pad": "' + b"x" * 200_000 + b'"}', "json"))
    with _client(url, tmp_path) as client:
        answer = client.can("org:cust", "feature:api")
    assert answer.error is not None


def test_other_destinations_raise_config_error_naming_the_supported_ones(tmp_path: Path) -> None:
    """can() on a destination without an entitlement API raises ConfigError at call time."""
    with (
        meterline.Client(api_key=SECRET, destination="lago", journal_dir=tmp_path / "j") as client,
        pytest.raises(ConfigError, match="openmeter"),
    ):
        client.can("org:cust", "feature:api")


def test_bad_arguments_and_a_closed_client(reference: ReferenceServer, tmp_path: Path) -> None:
    """An empty customer is a TypeError, a zero timeout a ValueError; can() after close() is
    ClientClosedError; an Answer reports only numbers."""
    client = _client(reference.url, tmp_path)
    with pytest.raises(TypeError):
        client.can("", "feature:api")
    with pytest.raises(ValueError, match="timeout"):
        client.can("org:cust", "feature:api", timeout=0)
    answer = client.can("org:cust", "feature:api")
    with pytest.raises(TypeError):
        answer.report("2")  # type: ignore[arg-type]
    client.close()
    with pytest.raises(ClientClosedError):
        client.can("org:cust", "feature:api")
    with pytest.raises(ConfigError):
        Answer("c", "f", True).report()


def test_can_fail_open_is_validated() -> None:
    """A non-bool can_fail_open is refused at construction."""
    with pytest.raises(ConfigError, match="can_fail_open"):
        meterline.Client(api_key=SECRET, can_fail_open="no")
