"""POST /v1/ingest: Orb's shape rules, per-event rules, duplicates, auth, limits, gzip."""

from __future__ import annotations

import gzip
import json
import logging
import socket
from typing import Any

import httpx
import pytest

from meterline.server import ReferenceServer
from tests.server.helpers import API_KEY, Clock, event, stamp

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def post(api: httpx.Client, events: list[dict[str, Any]], **params: str) -> httpx.Response:
    return api.post("/ingest", json={"events": events}, params=params)


# -- accepted events ----------------------------------------------------------------------------


def test_valid_events_are_stored_and_counted(api: httpx.Client, reference: ReferenceServer) -> None:
    """A valid batch answers 200 with an empty validation_failed and every event counts."""
    response = post(api, [event("a"), event("b", field="customer_id", customer="orb_1")])
    assert response.status_code == 200
    assert response.json() == {"validation_failed": []}
    assert reference.event_count() == 2
    assert {e["id"] for e in reference.events()} == {"a", "b"}
    assert reference.events("orb_1")[0]["customer_id"] == "orb_1"


def test_empty_batch_is_accepted(api: httpx.Client, reference: ReferenceServer) -> None:
    """An empty `events` array is a valid request that stores nothing."""
    assert post(api, []).json() == {"validation_failed": []}
    assert reference.event_count() == 0


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("2026-05-01T11:59:00+00:00", "2026-05-01T11:59:00Z"),
        ("2026-05-01t11:59:00,25z", "2026-05-01T11:59:00.250000Z"),
        ("2026-05-01T11:59:00.5Z", "2026-05-01T11:59:00.5Z"),
    ],
    ids=["offset", "comma-lowercase", "already-rfc3339"],
)
def test_utc_timestamps_are_kept_in_rfc3339_z_form(
    api: httpx.Client, reference: ReferenceServer, sent: str, kept: str
) -> None:
    """Other spellings of a UTC instant are accepted and stored in the RFC 3339 Z form."""
    post(api, [event("a", timestamp=sent)])
    assert reference.events()[0]["timestamp"] == kept


def test_null_other_customer_field_is_allowed(
    api: httpx.Client, reference: ReferenceServer
) -> None:
    """An explicit null for the unused customer field counts as absent."""
    body = {**event("a"), "customer_id": None}
    assert post(api, [body]).json() == {"validation_failed": []}
    assert reference.event_count() == 1


# -- per-event rules: a 400 naming the keys, nothing stored; the rest may be resent -----------

PER_EVENT_CASES = [
    ("both-customers", {"customer_id": "orb_1"}, "exactly one"),
    ("no-customer", {"external_customer_id": None}, "is required"),
    ("empty-customer", {"external_customer_id": ""}, "must not be empty"),
    ("empty-event-name", {"event_name": ""}, "event_name must not be empty"),
    ("not-iso", {"timestamp": "yesterday"}, "not an ISO 8601"),
    ("bad-date", {"timestamp": "2026-02-30T00:00:00Z"}, "not a valid calendar"),
    ("no-zone", {"timestamp": "2026-05-01T11:00:00"}, "no UTC designator"),
    ("not-utc", {"timestamp": "2026-05-01T13:00:00+02:00"}, "must be in UTC"),
    ("future", {"timestamp": stamp(300.000001)}, "more than 5 minutes in the future"),
    ("too-old", {"timestamp": stamp(-12 * 3600 - 0.000001)}, "older than the grace period (12h)"),
]


@pytest.mark.parametrize(
    ("change", "message"), [c[1:] for c in PER_EVENT_CASES], ids=[c[0] for c in PER_EVENT_CASES]
)
def test_per_event_rule_failures_are_a_400_naming_the_keys(
    api: httpx.Client, reference: ReferenceServer, change: dict[str, Any], message: str
) -> None:
    """A batch with an event breaking a per-event rule is a 400 naming it; nothing is stored."""
    response = post(api, [event("good"), {**event("bad"), **change}], debug="true")
    assert response.status_code == 400
    failed = response.json()["validation_errors"]
    assert [f["idempotency_key"] for f in failed] == ["bad"]
    assert any(message in reason for reason in failed[0]["validation_errors"]), failed
    assert reference.event_count() == 0
    resent = post(api, [event("good")], debug="true").json()
    assert resent == {"validation_failed": [], "debug": {"duplicate": [], "ingested": ["good"]}}


@pytest.mark.parametrize("offset", [300.0, -12 * 3600.0], ids=["5-minutes-ahead", "grace-edge"])
def test_time_bounds_are_inclusive(api: httpx.Client, offset: float) -> None:
    """Exactly 5 minutes ahead and exactly the grace period ago are still accepted."""
    assert post(api, [event("a", timestamp=stamp(offset))]).json()["validation_failed"] == []


def test_grace_period_follows_the_clock_and_setting(clock: Clock) -> None:
    """The grace period is configurable and measured from the server's clock."""
    server = ReferenceServer(api_keys=[API_KEY], clock=clock, grace_period="30m")
    with server, httpx.Client(base_url=server.url, headers=AUTH) as api:
        old = post(api, [event("old", timestamp=stamp(-31 * 60))]).json()
        assert "grace period (30m)" in old["validation_errors"][0]["validation_errors"][0]
        clock.now -= 3600  # the same timestamp is now in the future by 29 minutes
        ahead = post(api, [event("new", timestamp=stamp(-31 * 60))]).json()
        assert "future" in ahead["validation_errors"][0]["validation_errors"][0]


def test_a_rejected_key_can_be_sent_again_once_fixed(
    api: httpx.Client, reference: ReferenceServer
) -> None:
    """A key named in a 400 is not marked processed, so a fixed resend counts."""
    post(api, [{**event("k"), "customer_id": "orb_1"}])
    assert post(api, [event("k")], debug="true").json()["debug"]["ingested"] == ["k"]
    assert reference.event_count() == 1


# -- shape errors: 400 for the whole request, nothing stored ------------------------------------


def _nested(key: str) -> dict[str, Any]:
    return {**event(key), "properties": {"meta": {"a": 1}}}


SHAPE_CASES: list[tuple[str, bytes, str]] = [
    ("not-json", b"{", "not valid JSON"),
    ("nan", b'{"events": [{"x": NaN}]}', "not valid JSON"),
    ("bad-utf8", b'{"events": ["\xff"]}', "not valid JSON"),
    ("lone-surrogate", b'{"events": [], "x": "\\ud800"}', "unpaired"),
    ("array-body", b"[]", "must be a JSON object"),
    ("no-events", b"{}", "`events` is required"),
    ("events-not-array", b'{"events": {}}', "`events` is required"),
    ("unknown-top-level", b'{"events": [], "debug": true}', "unknown field `debug`"),
    ("event-not-object", b'{"events": [1]}', "events[0]: must be an object"),
]
EVENT_SHAPE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown-field", {"extra": 1}, "unknown field `extra`"),
    ("name-not-string", {"event_name": 5}, "event_name: must be a string"),
    ("timestamp-not-string", {"timestamp": 1714564800}, "timestamp: must be a string"),
    ("customer-not-string", {"external_customer_id": 42}, "must be a string or null"),
    ("properties-not-object", {"properties": [1]}, "properties: must be an object"),
    ("nested-object", {"properties": {"meta": {"a": 1}}}, "not a nested dict"),
    ("nested-array", {"properties": {"tags": ["a"]}}, "not a nested list"),
    ("null-property", {"properties": {"region": None}}, "not null"),
]


@pytest.mark.parametrize(
    ("raw", "message"), [c[1:] for c in SHAPE_CASES], ids=[c[0] for c in SHAPE_CASES]
)
def test_malformed_bodies_are_refused_whole(
    api: httpx.Client, reference: ReferenceServer, raw: bytes, message: str
) -> None:
    """A body that is not an IngestRequestBody answers 400 with a problem body."""
    response = api.post("/ingest", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    body = response.json()
    assert body["type"].endswith("#400-request-validation-errors")
    assert body["status"] == 400
    assert body["title"]
    assert message in body["detail"] + json.dumps(body["validation_errors"])
    assert reference.event_count() == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [c[1:] for c in EVENT_SHAPE_CASES],
    ids=[c[0] for c in EVENT_SHAPE_CASES],
)
def test_event_shape_errors_reject_the_batch_and_name_the_key(
    api: httpx.Client, reference: ReferenceServer, change: dict[str, Any], message: str
) -> None:
    """A wrongly shaped event rejects its whole batch; the error names its idempotency key."""
    response = post(api, [event("good"), {**event("bad"), **change}])
    assert response.status_code == 400
    errors = response.json()["validation_errors"]
    assert [e["idempotency_key"] for e in errors] == ["bad"]
    assert any(message in text for text in errors[0]["validation_errors"]), errors
    assert reference.event_count() == 0


@pytest.mark.parametrize("missing", ["event_name", "timestamp", "properties", "idempotency_key"])
def test_each_required_field_is_required(
    api: httpx.Client, reference: ReferenceServer, missing: str
) -> None:
    """Leaving out any of the four required fields answers 400."""
    body = event("a")
    del body[missing]
    response = post(api, [body])
    assert response.status_code == 400
    assert f"`{missing}` is required" in json.dumps(response.json()["validation_errors"])
    assert reference.event_count() == 0


@pytest.mark.parametrize("key", ["", 7], ids=["empty", "number"])
def test_an_unusable_idempotency_key_is_a_shape_error(api: httpx.Client, key: object) -> None:
    """An empty or non-string idempotency key answers 400, described by the event's index."""
    response = post(api, [{**event("x"), "idempotency_key": key}])
    assert response.status_code == 400
    assert "events[0].idempotency_key" in response.json()["validation_errors"][0]


# -- duplicates -----------------------------------------------------------------------------------


def test_a_known_key_is_a_duplicate_and_not_counted_again(
    api: httpx.Client, reference: ReferenceServer
) -> None:
    """Re-sending a stored key is accepted, reported as duplicate, and keeps the first body."""
    post(api, [event("a", properties={"tokens": 1})])
    response = post(api, [event("a", properties={"tokens": 99}), event("b")], debug="true")
    assert response.json() == {
        "validation_failed": [],
        "debug": {"duplicate": ["a"], "ingested": ["b"]},
    }
    assert reference.event_count() == 2
    assert reference.events()[0]["properties"] == {"tokens": 1}


def test_a_stored_key_stays_a_duplicate_even_when_its_resend_breaks_a_rule(
    api: httpx.Client, reference: ReferenceServer, clock: Clock
) -> None:
    """A replay of a stored event after the grace period is a duplicate, not a failure."""
    post(api, [event("a")])
    clock.now += 13 * 3600
    response = post(api, [event("a"), event("late")], debug="true")
    assert response.status_code == 400
    assert [f["idempotency_key"] for f in response.json()["validation_errors"]] == ["late"]
    replay = post(api, [event("a")], debug="true").json()
    assert replay == {"validation_failed": [], "debug": {"duplicate": ["a"], "ingested": []}}
    assert reference.event_count() == 1


def test_identical_repeats_in_one_batch_count_once(
    api: httpx.Client, reference: ReferenceServer
) -> None:
    """The same key twice with identical bodies (key order and nulls aside) is stored once."""
    first = event("a")
    again = {"customer_id": None, **dict(reversed(list(first.items())))}
    response = post(api, [first, again], debug="true")
    assert response.json()["debug"] == {"duplicate": [], "ingested": ["a"]}
    assert reference.event_count() == 1


@pytest.mark.parametrize(
    "other",
    [{"tokens": 11}, {"tokens": 10.0}, {"tokens": True}],
    ids=["other-value", "float-not-int", "bool-not-int"],
)
def test_a_key_repeated_with_another_body_rejects_the_batch(
    api: httpx.Client, reference: ReferenceServer, other: dict[str, Any]
) -> None:
    """Two bodies under one key in a batch answer 400 naming the key; nothing is stored."""
    batch = [event("ok"), event("a", properties={"tokens": 10}), event("a", properties=other)]
    response = post(api, batch)
    assert response.status_code == 400
    assert response.json()["validation_errors"] == [
        {
            "idempotency_key": "a",
            "validation_errors": [
                "the key appears more than once in this batch with different bodies"
            ],
        }
    ]
    assert reference.event_count() == 0


# -- debug and query parameters -----------------------------------------------------------------


def test_debug_is_off_by_default(api: httpx.Client) -> None:
    """Without debug=true the response holds only validation_failed."""
    assert post(api, [event("a")]).json() == {"validation_failed": []}
    assert post(api, [event("a")], debug="false").json() == {"validation_failed": []}


@pytest.mark.parametrize(
    "query", ["debug=yes", "foo=1", "debug=true&debug=true"], ids=["bad-flag", "unknown", "repeat"]
)
def test_bad_query_parameters_answer_400(
    api: httpx.Client, reference: ReferenceServer, query: str
) -> None:
    """A debug value other than true/false, an unknown or a repeated parameter answers 400."""
    response = api.post(f"/ingest?{query}", json={"events": [event("a")]})
    assert response.status_code == 400
    assert reference.event_count() == 0


def test_an_unknown_backfill_id_is_a_404(api: httpx.Client, reference: ReferenceServer) -> None:
    """Orb's backfill_id query parameter must name a backfill; an unknown one stores nothing."""
    response = post(api, [event("a")], backfill_id="bf_1")
    assert response.status_code == 404
    assert response.json()["type"].endswith("#404-resource-not-found")
    assert reference.event_count() == 0


# -- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic dGVzdC1rZXk=", "Bearer wrong-key", f"Bearer {API_KEY}x"],
    ids=["missing", "empty-token", "basic", "wrong", "prefix-match"],
)
def test_a_bad_or_missing_bearer_answers_401(
    reference: ReferenceServer, header: str | None
) -> None:
    """Requests without a configured bearer token answer 401 and store nothing."""
    headers = {"Authorization": header} if header else {}
    response = httpx.post(f"{reference.url}/ingest", json={"events": [event("a")]}, headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert body["status"] == 401
    assert body["type"].endswith("#401-authentication-error")
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert reference.event_count() == 0


def test_every_configured_key_is_accepted(clock: Clock) -> None:
    """Each key given to the server authenticates, in any scheme capitalisation."""
    with ReferenceServer(api_keys=["one", "two"], clock=clock) as server:
        for header in ("Bearer one", "bearer two"):
            response = httpx.post(
                f"{server.url}/ingest", json={"events": []}, headers={"Authorization": header}
            )
            assert response.status_code == 200


def test_without_configured_keys_any_bearer_is_accepted(clock: Clock) -> None:
    """With no keys configured any bearer token works, but one is still required."""
    with ReferenceServer(clock=clock) as server:
        url = f"{server.url}/ingest"
        ok = httpx.post(url, json={"events": []}, headers={"Authorization": "Bearer anything"})
        assert ok.status_code == 200
        assert httpx.post(url, json={"events": []}).status_code == 401


def test_health_needs_no_key(reference: ReferenceServer) -> None:
    """GET /v1/health answers 200 {"status": "ok"} without authentication."""
    response = httpx.get(f"{reference.url}/health?probe=1")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


# -- size limit and encodings ---------------------------------------------------------------------


def test_a_body_over_the_limit_answers_413_and_the_server_carries_on(clock: Clock) -> None:
    """A body larger than max_body_bytes answers 413 unread; the next request is served."""
    server = ReferenceServer(api_keys=[API_KEY], clock=clock, max_body_bytes=2000)
    with server, httpx.Client(base_url=server.url, headers=AUTH) as api:
        response = post(api, [event(f"k{i}") for i in range(30)])
        assert response.status_code == 413
        assert response.json()["type"].endswith("#413-request-too-large")
        assert response.headers["Connection"] == "close"
        assert post(api, [event("small")]).status_code == 200
        assert server.event_count() == 1


def test_the_limit_applies_after_gunzip(clock: Clock) -> None:
    """A small gzip body that inflates past max_body_bytes answers 413."""
    with ReferenceServer(api_keys=[API_KEY], clock=clock, max_body_bytes=2000) as server:
        raw = json.dumps({"events": [event(f"k{i}") for i in range(30)]}).encode()
        body = gzip.compress(raw)
        assert len(body) < 2000 < len(raw)
        headers = {**AUTH, "Content-Encoding": "gzip"}
        response = httpx.post(f"{server.url}/ingest", content=body, headers=headers)
        assert response.status_code == 413
        assert server.event_count() == 0


def test_gzip_bodies_are_accepted(api: httpx.Client, reference: ReferenceServer) -> None:
    """A Content-Encoding: gzip body is inflated and ingested like a plain one."""
    body = gzip.compress(json.dumps({"events": [event("a"), event("b")]}).encode())
    response = api.post("/ingest", content=body, headers={"Content-Encoding": "gzip"})
    assert response.json() == {"validation_failed": []}
    assert reference.event_count() == 2
    assert reference.requests[-1].gzip is True


@pytest.mark.parametrize(
    ("encoding", "body", "status"),
    [("gzip", b"not gzip", 400), ("gzip", gzip.compress(b"{}")[:-8], 400), ("br", b"{}", 400)],
    ids=["corrupt", "truncated", "unsupported"],
)
def test_bad_encodings_are_refused(
    api: httpx.Client, encoding: str, body: bytes, status: int
) -> None:
    """A corrupt or truncated gzip body, or an unknown encoding, answers a documented 400."""
    response = api.post("/ingest", content=body, headers={"Content-Encoding": encoding})
    assert response.status_code == status
    assert response.json()["status"] == status


def test_chunked_bodies_are_read(api: httpx.Client, reference: ReferenceServer) -> None:
    """A chunked body (no Content-Length) is read like any other, on a connection kept open."""
    body = json.dumps({"events": [event("a"), event("b")]}).encode()
    chunks = iter([body[:10], body[10:]])
    response = api.post("/ingest", content=chunks)
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 200
    assert reference.event_count() == 2
    assert api.post("/ingest", json={"events": [event("c")]}).status_code == 200


def test_a_chunked_body_over_the_limit_is_413(reference: ReferenceServer) -> None:
    """A chunked body larger than max_body_bytes answers 413 and closes the connection."""
    with socket.create_connection(("127.0.0.1", reference.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + f"{6 * 1024 * 1024:x}".encode() + b"\r\n"
        )
        assert sock.recv(200).startswith(b"HTTP/1.1 413")


# -- routing, errors, test helpers --------------------------------------------------------------


def test_unknown_paths_and_methods(api: httpx.Client) -> None:
    """Unknown paths answer 404; a known path with the wrong method answers 405 with Allow."""
    missing = api.get("/nothing")
    assert missing.status_code == 404
    assert missing.json()["type"].endswith("#404-url-not-found")
    assert api.post("/../ingest").status_code == 404
    wrong = api.get("/ingest")
    assert (wrong.status_code, wrong.headers["Allow"]) == (405, "POST")
    for method in ("HEAD", "OPTIONS", "TRACE"):
        other = api.request(method, "/ingest")
        assert (other.status_code, other.headers["Allow"]) == (405, "POST"), method


def test_an_internal_error_is_a_logged_500_and_the_server_carries_on(
    api: httpx.Client,
    reference: ReferenceServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug while handling a request answers a 500 problem body and is logged."""
    store = reference._app.store
    assert store is not None

    def broken(*args: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(store, "ingest", broken)
    with caplog.at_level(logging.ERROR, logger="meterline.server"):
        response = post(api, [event("a")])
    assert response.status_code == 500
    assert response.json()["type"].endswith("#500-internal-server-error")
    assert "ZeroDivisionError" in caplog.text
    monkeypatch.undo()
    assert post(api, [event("a")]).status_code == 200


def test_fail_next_answers_the_injected_status_without_storing(
    api: httpx.Client, reference: ReferenceServer
) -> None:
    """fail_next() makes the next ingest requests fail with that status and Retry-After."""
    reference.fail_next(429, times=2, retry_after=1.5)
    for _ in range(2):
        response = post(api, [event("a")])
        assert (response.status_code, response.headers["Retry-After"]) == (429, "1.5")
        assert response.json()["type"].endswith("#429-too-many-requests")
    assert reference.event_count() == 0
    assert post(api, [event("a")]).status_code == 200
    assert [r.status for r in reference.requests] == [429, 429, 200]
    with pytest.raises(ValueError, match="4xx or 5xx"):
        reference.fail_next(200)


def test_the_request_log_records_methods_paths_statuses_and_keys(
    api: httpx.Client, reference: ReferenceServer
) -> None:
    """server.requests lists each request with its ingest keys; clear_requests() empties it."""
    post(api, [event("a"), event("b")])
    api.get("/usage", params={"start": stamp(-600), "end": stamp(600)})
    first, second = reference.requests
    assert (first.method, first.path, first.status) == ("POST", "/v1/ingest", 200)
    assert (first.events, first.idempotency_keys) == (2, ("a", "b"))
    assert (second.method, second.path, second.events) == ("GET", "/v1/usage", 0)
    reference.clear_requests()
    assert reference.requests == []


def test_wait_for_events_returns_when_the_count_is_reached(
    api: httpx.Client, reference: ReferenceServer
) -> None:
    """wait_for_events() is True once enough events count, False at its deadline."""
    assert reference.wait_for_events(1, timeout=0.05) is False
    post(api, [event("a")])
    assert reference.wait_for_events(1, timeout=5.0) is True
