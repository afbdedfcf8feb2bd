"""How each vendor's ingest API looks to the chaos server: paths, envelope, key field, and
the bodies of its answers, written from the vendors' own documents (not from meterline's
destination modules, so that a mistake in one is not copied into the other).

A dialect answers the kinds the chaos schedule draws: acceptance (``ok``; Orb names the
rejected keys inside a 200, the others refuse a batch holding a bad event as a whole),
a refusal naming the bad events where the vendor can (``ok400``), 401, 429 with the
vendor's rate-limit header, and Stripe's session expiry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Dialect:
    name: str
    prefix: str  # the base_url path a client is given
    path: str  # where batches are POSTed
    key_field: str
    enveloped: bool  # {"events": [...]} (else a bare array)
    partial_ok: bool  # a 200 can name rejected events (Orb) instead of refusing the batch
    session_path: str | None = None  # Stripe

    def events(self, doc: Any) -> list[Any]:
        events = doc["events"] if self.enveloped else doc
        if not isinstance(events, list) or not all(
            isinstance(e, dict) and isinstance(e.get(self.key_field), str) for e in events
        ):
            raise ValueError(f"events must be objects with a string {self.key_field}")
        return events

    def properties(self, event: dict[str, Any]) -> dict[str, Any]:
        """The event's properties as report() was given them (as the vendor holds them)."""
        if self.name == "stripe":
            payload = dict(event.get("payload", {}))
            payload.pop("stripe_customer_id", None)
            return payload
        if self.name == "openmeter":
            return dict(event.get("data", {}))
        return dict(event.get("properties", {}))

    def ok(self, bad: list[str]) -> tuple[int, bytes, dict[str, str]]:
        """The answer that stores every event but the ``bad`` ones (Orb only names them)."""
        if self.name == "orb":
            failed = [{"idempotency_key": k, "validation_errors": ["chaos: rejected"]} for k in bad]
            return 200, json.dumps({"validation_failed": failed}).encode(), {}
        assert not bad, "only Orb accepts part of a batch"
        if self.name == "metronome":
            return 200, b"", {}
        if self.name == "lago":
            return 200, b'{"events":[]}', {}
        if self.name == "openmeter":
            return 204, b"", {}
        return 200, b"{}", {}  # stripe

    def refuse(self, keys: list[str], bad: list[str]) -> tuple[int, bytes, dict[str, str]]:
        """The batch refused because of the ``bad`` events (nothing stored)."""
        if self.name == "orb":
            failed = [{"idempotency_key": k, "validation_errors": ["chaos: rejected"]} for k in bad]
            body = {"status": 400, "title": "Invalid events", "validation_failed": failed}
            return 400, json.dumps(body).encode(), {}
        if self.name == "lago":
            details = {str(i): {"code": ["chaos_rejected"]} for i, k in enumerate(keys) if k in bad}
            body = {
                "status": 422,
                "error": "Unprocessable entity",
                "code": "validation_errors",
                "error_details": details,
            }
            return 422, json.dumps(body).encode(), {}
        if self.name == "metronome":
            return 400, b'{"message":"chaos: an event is invalid"}', {}
        if self.name == "openmeter":
            body = {"type": "about:blank", "title": "Bad Request", "status": 400, "detail": "chaos"}
            return 400, json.dumps(body).encode(), {"Content-Type": "application/problem+json"}
        body = {"error": {"code": "payload_invalid_value", "message": "chaos: rejected"}}
        return 400, json.dumps(body).encode(), {}

    def unauthorized(self) -> bytes:
        if self.name == "stripe":
            return b'{"error":{"type":"invalid_request_error","message":"Invalid API Key"}}'
        if self.name == "lago":
            return b'{"status":401,"error":"Unauthorized"}'
        if self.name == "metronome":
            return b'{"message":"Unauthorized"}'
        return b'{"status":401,"title":"Unauthorized","type":"auth"}'

    def rate_limited(self, retry_after: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        headers = dict(retry_after)
        if self.name == "lago" and "Retry-After" in headers:
            headers = {"X-RateLimit-Reset": headers["Retry-After"]}  # Lago's own header
        if self.name == "stripe":
            body = b'{"error":{"code":"rate_limit","message":"Too many requests"}}'
            return body, headers
        return b'{"status":429,"title":"Too Many Requests"}', headers

    def session_expired(self) -> bytes:
        return json.dumps(
            {
                "error": {
                    "code": "billing_meter_event_session_expired",
                    "type": "temporary_session_expired",
                    "message": "The meter event session has expired.",
                }
            }
        ).encode()


DIALECTS: dict[str, Dialect] = {
    "orb": Dialect("orb", "/v1", "/v1/ingest", "idempotency_key", True, True),
    "metronome": Dialect("metronome", "", "/v1/ingest", "transaction_id", False, False),
    "lago": Dialect("lago", "/api/v1", "/api/v1/events/batch", "transaction_id", True, False),
    "openmeter": Dialect("openmeter", "", "/api/v1/events", "id", False, False),
    "stripe": Dialect(
        "stripe",
        "",
        "/v2/billing/meter_event_stream",
        "identifier",
        True,
        False,
        session_path="/v2/billing/meter_event_session",
    ),
}
KEY_FIELDS = tuple(dict.fromkeys(d.key_field for d in DIALECTS.values()))
# The vendors' limits of events per request (the plan caps its batch sizes to them).
DIALECT_LIMITS = {"orb": 500, "metronome": 100, "lago": 100, "openmeter": 100, "stripe": 100}
