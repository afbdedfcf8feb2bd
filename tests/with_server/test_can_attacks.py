"""What attacking ``can()`` and the usage report found, kept fixed: a definite no read as
a yes, dot segments, odd numbers, a key echoed by a server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest

import meterline
from meterline.server import ReferenceServer
from meterline.server._plans import PlansError, parse_plans

SECRET = "sk_live_meterline_can_attack_0123"
PLANS: dict[str, Any] = {
    "default_plan": "free",
    "plans": {"free": {"features": {"api": {"limit": 10}}}},
}


def _client(url: str, tmp_path: Path) -> meterline.Client:
    return meterline.Client(api_key=SECRET, base_url=url, journal_dir=tmp_path / "j")


def test_usage_past_the_largest_float_is_still_a_definite_no(tmp_path):
    """Two reports of 1.7e308 units: the server answers valid JSON (no Infinity) and can()
    says no, where an unreadable answer would have failed open to yes."""
    with (
        ReferenceServer(api_keys=[SECRET], plans=PLANS) as server,
        _client(server.url, tmp_path) as client,
    ):
        for _ in range(2):
            client.report("big", "api", {"quantity": 1.7e308})
        assert client.flush(timeout=10).sent == 2
        answer = client.can("big", "api")
    assert (answer.ok, answer.error) == (False, None)


def test_negative_usage_gives_no_allowance_back(tmp_path):
    """A negative report counts as nothing: remaining never exceeds the limit, and
    answer.report() refuses a negative n."""
    with (
        ReferenceServer(api_keys=[SECRET], plans=PLANS) as server,
        _client(server.url, tmp_path) as client,
    ):
        client.report("neg", "api", {"quantity": -1000})
        client.report("neg", "api", {"quantity": 4})
        assert client.flush(timeout=10).sent == 2
        answer = client.can("neg", "api")
        assert (answer.used, answer.remaining) == (4, 6)
        with pytest.raises(ValueError, match=">= 0"):
            answer.report(-5)


@pytest.mark.parametrize(("customer", "feature"), [("..", "api"), (".", "api"), ("c", "..")])
def test_dot_segments_stay_inside_the_entitlement_path(tmp_path, customer, feature):
    """A customer or feature named . or .. is one path segment, never a way to another
    endpoint (which would fail open): a customer without a plan gets a definite no."""
    plans = {"plans": {"free": {"features": {"api": {"limit": 0}}}}, "default_plan": "free"}
    with (
        ReferenceServer(api_keys=[SECRET], plans=plans) as server,
        _client(server.url, tmp_path) as client,
    ):
        answer = client.can(customer, feature)
    assert answer.error is None
    assert answer.ok is False


def test_an_infinite_timeout_is_a_value_error_and_a_huge_one_works(tmp_path):
    """can(timeout=inf) is refused at once; 1e300 is clamped: neither is an OverflowError
    from the socket layer."""
    with (
        ReferenceServer(api_keys=[SECRET], plans=PLANS) as server,
        _client(server.url, tmp_path) as client,
    ):
        with pytest.raises(ValueError, match="timeout"):
            client.can("c", "api", timeout=float("inf"))
        assert client.can("c", "api", timeout=1e300).error is None


@pytest.mark.parametrize("limit", [float("inf"), float("nan")])
def test_a_plan_limit_that_is_not_finite_is_refused_at_load(limit):
    """limit = inf (someone meaning unlimited) or NaN is a PlansError: omit it instead."""
    with pytest.raises(PlansError, match="limit"):
        parse_plans({"plans": {"p": {"features": {"f": {"limit": limit}}}}})


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"detail": "invalid token " + self.headers["Authorization"]}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_meterline_usage_never_prints_a_key_the_server_echoes():
    """A server quoting the Authorization header in its 401: the command says so, with ***."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE_")}
        done = subprocess.run(
            [sys.executable, "-m", "meterline", "usage", "--start", "2026-01-01",
             "--end", "2026-02-01", "--url", url],
            capture_output=True, text=True, timeout=60,
            env={**env, "METERLINE_API_KEY": SECRET},
        )  # fmt: skip
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert done.returncode == 1
    assert "401" in done.stderr
    assert SECRET not in done.stdout + done.stderr


class _Trickle(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        try:
            for _ in range(100):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)  # the server under test trickles: a fault, not a test wait
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


def test_the_usage_report_is_bounded_as_a_whole():
    """A server trickling its answer cannot hold `meterline usage` past its timeout."""
    from meterline._cli_usage import UsageError, fetch_report

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    httpd.daemon_threads = True
    Thread(target=httpd.serve_forever, daemon=True).start()
    started = time.monotonic()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        with pytest.raises(UsageError, match="within"):
            fetch_report(url, SECRET, "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", timeout=1)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert time.monotonic() - started < 5
