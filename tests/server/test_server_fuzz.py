"""Arbitrary request bodies get a 2xx or 4xx answer, never a 5xx (no HTTP: App directly)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.server._app import App
from meterline.server._messages import Request
from meterline.server._store import Store
from tests.server.helpers import NOW, event

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = st.sampled_from(
    [
        "customer_id",
        "external_customer_id",
        "event_name",
        "timestamp",
        "properties",
        "idempotency_key",
        "other",
    ]
)


@contextmanager
def app() -> Iterator[App]:
    application = App(api_keys=["k"], grace_period=43200.0, clock=NOW.timestamp, request_log_size=0)
    application.store = Store(":memory:")
    try:
        yield application
    finally:
        application.store.close()


def answer(application: App, method: str, target: str, body: bytes) -> int:
    request = Request(method, target, {"authorization": "Bearer k"}, lambda: body)
    return application.handle(request).status


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(FIELDS, JSON, max_size=7), max_size=4))
def test_mangled_events_never_cause_a_server_error(events: list[dict[str, Any]]) -> None:
    """Events with any mix of fields and JSON values are accepted or refused, never a 5xx."""
    body = json.dumps({"events": [{**event(str(i)), **e} for i, e in enumerate(events)]})
    with app() as application:
        for target in ("/v1/ingest?debug=true", "/v1/events/0", "/v1/events/search"):
            method = "PUT" if target == "/v1/events/0" else "POST"
            assert answer(application, method, target, body.encode()) < 500


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=64), JSON.map(lambda v: json.dumps(v).encode())))
def test_any_body_on_any_endpoint_is_a_client_error_at_worst(raw: bytes) -> None:
    """Random bytes or JSON on every endpoint answer below 500."""
    with app() as application:
        for method, target in [
            ("POST", "/v1/ingest"),
            ("PUT", "/v1/events/x"),
            ("PUT", "/v1/events/x/deprecate"),
            ("POST", "/v1/events/search"),
            ("GET", "/v1/usage?start=2026-01-01T00:00:00Z&end=2027-01-01T00:00:00Z"),
        ]:
            assert answer(application, method, target, raw) < 500
