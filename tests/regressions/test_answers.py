"""What report() refuses, and what an answer, a transport or a callback can do to a batch.

Scenarios 2, 3, 4, 7, 22 and 23 of the regression issue.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

import meterline
from meterline.testing import wait_until
from tests.regressions.helpers import journal_entries, journal_keys
from tests.support.fault_server import FaultServer, Step

SURROGATE = "\ud800"
BAD_EVENTS: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "customer": (("cust_" + SURROGATE, "api_call", {"n": 1}), {}),
    "property key": (("cust_1", "api_call", {"k" + SURROGATE: 1}), {}),
    "property value": (("cust_1", "api_call", {"note": "x" + SURROGATE}), {}),
    "event name": (("cust_1", "api_" + SURROGATE, {"n": 1}), {}),
    "idempotency key": (("cust_1", "api_call", {"n": 1}), {"idempotency_key": "k" + SURROGATE}),
}


@pytest.mark.parametrize("where", sorted(BAD_EVENTS))
def test_lone_surrogate_is_refused_by_report_and_the_batch_still_arrives(
    server: FaultServer, make_client, where: str
):
    """A lone surrogate anywhere in an event makes report() raise InvalidEventError at once,
    and the 499 good events reported around it are all delivered."""
    client = make_client(flush_interval=5)
    args, kwargs = BAD_EVENTS[where]
    good = [client.report("cust_1", "api_call", {"i": i}) for i in range(250)]
    raised: BaseException | None = None
    try:
        client.report(*args, **kwargs)
    except meterline.InvalidEventError as exc:
        raised = exc
    good += [client.report("cust_1", "api_call", {"i": i}) for i in range(250, 499)]
    result = client.flush(timeout=3)
    delivered = len(set(good) & server.keys())
    assert (raised is not None, delivered) == (True, 499), (
        f"report() raised: {raised!r}; {delivered} of 499 good events delivered; {result}"
    )
    assert client.stats()["dropped"] == 0


class _HttpxResponseTransport:
    """A user's transport that returns httpx's Response (no ``.status``) instead of ours."""

    def __init__(self) -> None:
        self.calls = 0

    def send(self, events: Any, *, timeout: float | None = None) -> Any:
        self.calls += 1
        return httpx.Response(200, json={"validation_failed": []})

    def close(self) -> None:
        pass


def test_transport_returning_a_foreign_response_loses_nothing(make_client, journal_dir: Path):
    """A transport whose send() returns an object without ``.status`` (an httpx.Response):
    every event is journaled (counted and on disk), on_error is told, nothing is dropped."""
    errors: list[tuple[BaseException, dict[str, object]]] = []
    transport = _HttpxResponseTransport()
    client = make_client(
        transport=transport,
        on_error=lambda exc, info: errors.append((exc, info)),
        retry_attempts=2,
        retry_deadline=1,
        probe_interval=30,
    )
    keys = [client.report("cust_1", "api_call", {"i": i}) for i in range(100)]
    result = client.flush(timeout=5)
    stats = client.stats()
    assert (result.journaled, result.pending) == (100, 0), result
    assert stats["journaled"] == 100
    assert stats["dropped"] == 0
    assert set(journal_keys(journal_dir)) == set(keys)
    assert transport.calls >= 1
    wait_until(lambda: errors, timeout=5)


@pytest.mark.parametrize(
    ("label", "key"),
    [("zero-width space", "sk_live_abc\u200bdef123"), ("trailing space", "sk_live_abcdef123 ")],
)
def test_api_key_no_header_can_carry_is_refused_without_echoing_it(
    journal_dir: Path, label: str, key: str
):
    """An API key with a zero-width space or a trailing space raises ConfigError when the
    Client is built, and the message does not contain the key."""
    with pytest.raises(meterline.ConfigError) as info:
        meterline.Client(api_key=key, base_url="http://127.0.0.1:9/v1", journal_dir=journal_dir)
    text = str(info.value) + repr(info.value)
    assert key not in text
    assert key.strip().replace("\u200b", "") not in text
    assert "abcdef123" not in text
    assert "abc\u200bdef" not in text


def test_on_error_raising_system_exit_does_not_stop_the_pipeline(
    server: FaultServer, make_client, journal_dir: Path
):
    """An on_error callback that calls sys.exit() while the endpoint answers 503: the batch
    is journaled, the pipeline keeps running, and later events are delivered once the
    endpoint recovers."""
    calls: list[BaseException] = []

    def on_error(exc: BaseException, info: dict[str, object]) -> None:
        calls.append(exc)
        sys.exit(1)

    server.outage_status = 503
    client = make_client(on_error=on_error, retry_attempts=1, probe_interval=0.2)
    first = [client.report("cust_1", "api_call", {"i": i}) for i in range(50)]
    result = client.flush(timeout=3)
    assert (result.journaled, result.pending) == (50, 0), result
    assert set(journal_keys(journal_dir)) == set(first)
    assert calls
    server.outage_status = None
    later = [client.report("cust_1", "api_call", {"i": i}) for i in range(50, 100)]
    assert client.flush(timeout=5), "the pipeline stopped after on_error raised SystemExit"
    wait_until(lambda: set(later) <= server.keys(), timeout=10)
    assert client.replay(timeout=10)
    assert set(first) | set(later) <= server.keys()
    assert client.stats()["dropped"] == 0


HTML_PAGE = b"<!doctype html><html><body><h1>Welcome to the captive portal</h1></body></html>"


def test_html_200_from_a_proxy_is_not_delivery(server: FaultServer, make_client, journal_dir):
    """An endpoint answering 200 text/html is not the ingest API: nothing counts as sent,
    the batch is retried, then journaled (all of it on disk)."""
    server.always = Step(200, body=HTML_PAGE, content_type="text/html; charset=utf-8")
    client = make_client(
        retry_attempts=3, retry_deadline=5, probe_interval=30, replay_interval=30, flush_interval=5
    )
    keys = [client.report("cust_1", "api_call", {"i": i}) for i in range(100)]
    result = client.flush(timeout=10)
    stats = client.stats()
    assert stats["sent"] == 0, f"an HTML page counted as delivery: {stats}"
    assert (result.journaled, result.pending) == (100, 0), result
    assert set(journal_keys(journal_dir)) == set(keys)
    assert len(server.requests) >= 2, "not retried"


def test_html_400_is_neither_a_rejection_nor_bisected(
    server: FaultServer, make_client, journal_dir: Path
):
    """An endpoint answering 400 text/html (not Orb's error body) rejects nothing: no event
    goes to rejected/, the batch is journaled, after at most retry_attempts requests."""
    server.always = Step(400, body=HTML_PAGE, content_type="text/html")
    client = make_client(
        retry_attempts=3, retry_deadline=5, probe_interval=30, replay_interval=30, flush_interval=5
    )
    keys = [client.report("cust_1", "api_call", {"i": i}) for i in range(100)]
    result = client.flush(timeout=10)
    stats = client.stats()
    assert stats["rejected"] == 0, stats
    assert journal_keys(journal_dir, "rejected") == []
    assert (result.journaled, result.pending) == (100, 0), result
    assert set(journal_keys(journal_dir)) == set(keys)
    assert 1 <= len(server.requests) <= 3, f"{len(server.requests)} requests for one batch"


@pytest.fixture
def meterline_records() -> Iterator[list[logging.LogRecord]]:
    """Every record of the "meterline" logger (and its children) at DEBUG and above."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("meterline")
    handler, level = Keep(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def _record_text(record: logging.LogRecord) -> str:
    parts = [record.getMessage(), repr(record.args), repr(record.__dict__)]
    if record.exc_info:
        parts.append("".join(traceback.format_exception(*record.exc_info)))
    return "\n".join(parts)


def _error_text(exc: BaseException, info: dict[str, object]) -> str:
    chain, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain += [str(current), repr(current), repr(current.args)]
        current = current.__cause__ or current.__context__
    return "\n".join([*chain, repr(info), str(info)])


def test_a_401_that_echoes_the_key_never_puts_it_in_a_log_or_a_callback(
    server: FaultServer, make_client, meterline_records: list[logging.LogRecord]
):
    """A server that answers 401 echoing the Authorization header in its body: the key
    appears in no record of the "meterline" logger (at DEBUG) and in no on_error argument."""
    secret = "sk_live_Zq8RvT3mNp5wXy7K"

    def echo(request: Any) -> dict[str, object]:
        return {
            "type": "https://docs.withorb.com/errors#401",
            "status": 401,
            "title": f"Unauthorized: {request.authorization}",
            "detail": f"the token {request.authorization} is not valid for this account",
        }

    server.always = Step(401, body=echo, headers={"WWW-Authenticate": f"Bearer {secret}"})
    errors: list[tuple[BaseException, dict[str, object]]] = []
    client = make_client(
        api_key=secret,
        on_error=lambda exc, info: errors.append((exc, info)),
        retry_attempts=1,
        auth_probe_interval=30,
    )
    for i in range(20):
        client.report("cust_1", "api_call", {"i": i})
    client.flush(timeout=5)
    client.close(timeout=2)
    assert server.requests
    assert secret in (server.requests[0].authorization or "")
    assert errors, "on_error was never told about the 401"
    leaks = [r for r in meterline_records if secret in _record_text(r)]
    assert not leaks, f"the key is in log records: {[r.getMessage() for r in leaks]}"
    leaked = [e for e in errors if secret in _error_text(*e)]
    assert not leaked, f"the key reached on_error: {leaked[0]!r}"
    assert any(r.levelno >= logging.ERROR for r in meterline_records)


def test_same_key_same_content_in_one_batch_is_deduplicated_not_dropped(
    server: FaultServer, make_client
):
    """One key reported three times with identical content in one batch is delivered once;
    flush() is truthy, nothing counts as dropped and two count as deduplicated."""
    client = make_client(flush_interval=5)
    when = datetime.now(timezone.utc) - timedelta(minutes=1)
    key = "order-42-line-1"
    for _ in range(3):
        client.report("cust_1", "api_call", {"n": 7}, timestamp=when, idempotency_key=key)
    others = [client.report("cust_1", "api_call", {"i": i}) for i in range(10)]
    result = client.flush(timeout=5)
    stats = client.stats()
    assert result, result
    assert server.deliveries.get(key) == 1
    assert set(others) <= server.keys()
    assert stats["dropped"] == 0, stats
    assert stats.get("deduplicated") == 2, stats


def test_same_key_different_content_rejects_the_later_one(
    server: FaultServer, make_client, journal_dir: Path
):
    """The same key twice in one batch with different content: the first is sent, the
    second is rejected with reason conflicting_duplicate_key (counted, kept in rejected/)."""
    client = make_client(flush_interval=5)
    when = datetime.now(timezone.utc) - timedelta(minutes=1)
    key = "order-43-line-1"
    client.report("cust_1", "api_call", {"n": 1}, timestamp=when, idempotency_key=key)
    client.report("cust_1", "api_call", {"n": 2}, timestamp=when, idempotency_key=key)
    client.flush(timeout=5)
    stats = client.stats()
    assert server.received.get(key, {}).get("properties") == {"n": 1}
    assert stats["rejected"] == 1, stats
    assert stats["dropped"] == 0, stats
    rejected = journal_entries(journal_dir, "rejected")
    assert [(e["idempotency_key"], e["properties"]) for e, _ in rejected] == [(key, {"n": 2})]
    assert any("conflicting_duplicate_key" in str(reason) for reason in rejected[0][1])
