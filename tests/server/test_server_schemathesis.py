"""Schemathesis on Orb's OpenAPI document, cut to the events operations, against the server.

Every check runs. A schema-valid request that the server refuses with a 400 passes only if
the refusal is one of the rules Orb's document states in prose but its schemas do not
encode (``EXCUSED``); any other refusal, a 5xx, an undocumented status or a body off its
schema fails.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import CHECKS, load_all_checks

from meterline.server import ReferenceServer
from tests.support.prism import spec_path

KEY = "schemathesis-key"
EXAMPLES = 15  # per operation and generation mode: bounded, a few seconds in all
# Rules from the document's descriptions, which a schema-valid request can still break.
EXCUSED = re.compile(
    "|".join(
        (
            r"exactly one of customer_id and external_customer_id",  # ingest: "Exactly one"
            r"one of customer_id or external_customer_id is required",
            r"at most one of customer_id and external_customer_id",  # a backfill's scope
            r"must be in UTC",  # ingest and amend: "no timezone offset (i.e. UTC)"
            r"values must be strings, numbers or booleans",  # "Nested dictionaries are disallowed"
            r"must not be empty",  # an event needs a name, a customer, a key
            r"more than 5 minutes in the future|older than the grace period",
            r"`timeframe_start` must be earlier than `timeframe_end`",
            r"at most 31 days long",  # "Orb allows backfills up to 31 days in duration"
            r"not a cursor this server returned",  # "populated by the `next_cursor` value"
            r"deprecation_filter",  # computed properties, which the server does not have
            r"repeated with different bodies",  # "the entire batch will be rejected"
            r"must match the original",  # amend: same timestamp and customer
            r"unpaired UTF-16 surrogate",  # not text: cannot be stored as UTF-8
        )
    )
)

load_all_checks()
POSITIVE_DATA_ACCEPTANCE = CHECKS.get_by_names(["positive_data_acceptance"])[0]


def _events_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(spec_path("orb-openapi.json").read_text())
    document["paths"] = {
        path: item
        for path, item in document["paths"].items()
        if path == "/ingest" or path.startswith("/events")
    }
    return document


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer(api_keys=[KEY]) as reference:
        yield reference


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_failure_the_document_does_not_excuse(server: ReferenceServer, mode: str) -> None:
    """Generated requests to every events operation meet every check, or an excused rule."""
    schema = schemathesis.openapi.from_dict(_events_document())
    schema.config.update(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"})
    generation = (
        schemathesis.GenerationMode.POSITIVE
        if mode == "positive"
        else schemathesis.GenerationMode.NEGATIVE
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 10
    unexcused: list[str] = []
    for operation in operations:
        strategy = operation.as_strategy(generation_mode=generation)
        try:
            _run(strategy, unexcused, positive=mode == "positive")
        except Unsatisfiable:
            assert mode == "negative"  # a string path parameter alone cannot be made invalid
    assert unexcused == []


def _run(strategy: st.SearchStrategy[Any], unexcused: list[str], *, positive: bool) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def one(case: schemathesis.Case) -> None:
        response = case.call()
        excluded = [POSITIVE_DATA_ACCEPTANCE]
        try:
            case.validate_response(response, excluded_checks=excluded)
        except Exception as exc:
            unexcused.append(f"{case.method} {case.path}: {str(exc)[:500]}")
            return
        if positive and response.status_code == 400:
            for reason in _reasons(response.json()):
                if not EXCUSED.search(reason):
                    unexcused.append(f"{case.method} {case.formatted_path}: 400 {reason[:300]}")

    one()


def _reasons(body: dict[str, Any]) -> list[str]:
    """Every reason a 400 gives, including those under each named key."""
    reasons: list[str] = []
    for entry in body.get("validation_errors") or [body.get("detail", "")]:
        if isinstance(entry, dict):
            reasons.extend(str(r) for r in entry.get("validation_errors", []))
        else:
            reasons.append(str(entry))
    return reasons
