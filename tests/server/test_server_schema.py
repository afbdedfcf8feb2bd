"""The server's bodies validate against the schemas of Orb's OpenAPI document.

The full document is read from ``$ORB_OPENAPI_SPEC`` or the shared specs folder when present;
otherwise from ``orb_schemas.json`` beside this file, a copy of the schemas used here with
their annotations removed. ``$ref``s are resolved against the document's components.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from meterline.server import ReferenceServer
from tests.server.helpers import event, stamp
from tests.support.prism import SPEC_DIRS

HERE = Path(__file__).parent
FULL_SPEC = Path(
    os.environ.get("ORB_OPENAPI_SPEC")
    or next(
        (d / "orb-openapi.json" for d in SPEC_DIRS if (d / "orb-openapi.json").is_file()),
        HERE / "orb_schemas.json",
    )
)
DOC_URI = "urn:orb-openapi"
_ANNOTATIONS = ("description", "examples", "title", "x-stainless-renameMap")


def _load() -> dict[str, Any]:
    path = FULL_SPEC if FULL_SPEC.is_file() else HERE / "orb_schemas.json"
    document: dict[str, Any] = json.loads(path.read_text())
    return document


DOCUMENT = _load()
REGISTRY: Registry[Any] = Registry().with_resource(
    DOC_URI, Resource.from_contents(DOCUMENT, default_specification=DRAFT202012)
)


def check(instance: object, schema_name: str) -> None:
    """Validate ``instance`` against ``#/components/schemas/<schema_name>``."""
    schema = {"$ref": f"{DOC_URI}#/components/schemas/{schema_name}"}
    jsonschema.Draft202012Validator(schema, registry=REGISTRY).validate(instance)


def test_sent_events_match_ingest_request_body() -> None:
    """The events these tests send are valid IngestRequestBody documents (and a bad one is not)."""
    check({"events": [event("a"), event("b", field="customer_id")]}, "IngestRequestBody")
    with pytest.raises(jsonschema.ValidationError):
        check({"events": [{**event("a"), "extra": 1}]}, "IngestRequestBody")


def test_ingest_bodies_match_ingestion_response_and_validation_error(api: httpx.Client) -> None:
    """A 200 (with debug) matches IngestionResponse; a per-event 400 names ValidationErrors."""
    bad = {**event("bad"), "customer_id": "orb_1"}
    refused = api.post("/ingest", json={"events": [event("a"), bad]})
    assert refused.status_code == 400
    check(refused.json(), "RequestValidationError")
    check(refused.json()["validation_errors"][0], "ValidationError")
    body = api.post("/ingest", json={"events": [event("a")]}, params={"debug": "true"}).json()
    assert body["validation_failed"] == []
    check(body, "IngestionResponse")


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"events": {}}',
        json.dumps({"events": [{**event("a"), "properties": {"x": [1]}}]}).encode(),
        json.dumps({"events": [event("a"), event("a", properties={"n": 2})]}).encode(),
    ],
    ids=["not-json", "wrong-shape", "nested-property", "key-conflict"],
)
def test_400_bodies_match_400error(api: httpx.Client, raw: bytes) -> None:
    """Every kind of 400 body matches 400Error (Orb's RequestValidationError)."""
    response = api.post("/ingest", content=raw)
    assert response.status_code == 400
    check(response.json(), "400Error")
    check(response.json(), "RequestValidationError")


def test_other_error_bodies_match_their_schemas(
    api: httpx.Client, reference: ReferenceServer
) -> None:
    """401, 404 (both kinds), 413, 429 and 500 bodies match the schemas Orb documents."""
    unauthorized = httpx.post(f"{reference.url}/ingest", json={"events": []})
    check(unauthorized.json(), "401Error")
    check(api.get("/nowhere").json(), "404Error")
    check(api.put("/events/nope/deprecate").json(), "404Error")
    for status, schema in ((413, "413Error"), (429, "429Error"), (500, "500Error")):
        reference.fail_next(status)
        response = api.post("/ingest", json={"events": []})
        assert response.status_code == status
        check(response.json(), schema)


def test_events_resource_bodies_match(api: httpx.Client) -> None:
    """Amend, deprecate and search bodies match their request and response schemas."""
    api.post("/ingest", json={"events": [event("a", timestamp=stamp(-60))]})
    amended = {k: v for k, v in event("a", timestamp=stamp(-60)).items() if k != "idempotency_key"}
    check(amended, "AmendedEvent")
    check(api.put("/events/a", json=amended).json(), "AmendEventResult")
    check(api.put("/events/a/deprecate").json(), "DeprecatedEventResult")
    criteria = {"event_ids": ["a"]}
    check(criteria, "EventSearchCriteria")
    found = api.post("/events/search", json=criteria).json()
    assert found["data"]
    check(found, "Events")


def _strip(schema: Any) -> Any:
    """A schema without its annotations, as stored in orb_schemas.json."""
    if isinstance(schema, list):
        return [_strip(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: {n: _strip(s) for n, s in value.items()} if key == "properties" else _strip(value)
        for key, value in schema.items()
        if key not in _ANNOTATIONS
    }


@pytest.mark.skipif(not FULL_SPEC.is_file(), reason="the full Orb OpenAPI document is absent")
def test_backfill_and_volume_bodies_match_their_schemas(api: httpx.Client) -> None:
    """Backfill, Backfills and EventVolumes bodies match Orb's schemas, before and after close."""
    new = {"timeframe_start": stamp(-48 * 3600), "timeframe_end": stamp(-24 * 3600)}
    check(new, "NewBackfill")
    created = api.post("/events/backfills", json=new).json()
    check(created, "Backfill")
    old = event("old", timestamp=stamp(-30 * 3600))
    api.post("/ingest", params={"backfill_id": created["id"]}, json={"events": [old]})
    check(api.post(f"/events/backfills/{created['id']}/close").json(), "Backfill")
    check(api.get("/events/backfills").json(), "Backfills")
    check(api.post(f"/events/backfills/{created['id']}/revert").json(), "Backfill")
    api.post("/ingest", json={"events": [event("a")]})
    volume = api.get("/events/volume", params={"timeframe_start": stamp(-3600)}).json()
    assert volume["data"]
    check(volume, "EventVolumes")


def test_vendored_schemas_match_the_full_document() -> None:
    """orb_schemas.json is exactly the full document's schemas minus annotations."""
    vendored = json.loads((HERE / "orb_schemas.json").read_text())["components"]["schemas"]
    full = DOCUMENT["components"]["schemas"]
    assert vendored == {name: _strip(full[name]) for name in vendored}


def test_the_checks_are_not_vacuous() -> None:
    """Bodies that break the referenced schemas are caught, so a pass above means something."""
    wrong = [
        ({"validation_failed": [{"idempotency_key": "a"}]}, "IngestionResponse"),
        ({"type": "about:blank", "status": 400, "validation_errors": []}, "400Error"),
        (
            {
                "type": "https://docs.withorb.com/reference/error-responses#401-authentication-error",
                "status": 400,
            },
            "401Error",
        ),
    ]
    for instance, name in wrong:
        with pytest.raises(jsonschema.ValidationError):
            check(instance, name)
