"""``client.can()`` with the openmeter destination: the entitlement value request passes a
validating mock of OpenMeter's document (Prism), and ``EntitlementValue`` is read as an
``Answer``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import meterline
from meterline._entitlements import openmeter_url, read_openmeter
from tests.support.prism import prism_server, spec_path


@pytest.fixture(scope="module")
def prism_url() -> Iterator[str]:
    with prism_server(str(spec_path("openmeter-openapi.yaml"))) as url:
        yield url


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_can_reads_openmeters_entitlement_value_from_the_validating_mock(
    prism_url: str, tmp_path: Path
) -> None:
    """The mock accepts the request (path, bearer auth) and answers the document's example
    EntitlementValue: hasAccess true, usage 50, balance 100, totalAvailableGrantAmount 100."""
    with meterline.Client(
        destination="openmeter", base_url=prism_url, api_key="test", journal_dir=tmp_path / "j"
    ) as client:
        answer = client.can("customer-1", "api_calls", timeout=10)
    assert answer.error is None
    assert (answer.ok, answer.used, answer.remaining, answer.limit) == (True, 50, 100, 100)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_mock_refuses_a_path_the_document_lacks(prism_url: str) -> None:
    """A path outside the document is a 404 from the mock, so the first test's 200 means the
    request matched the document's operation."""
    headers = {"Authorization": "Bearer test"}
    good = httpx.get(openmeter_url(prism_url, "c", "f"), headers=headers, timeout=10)
    bad = httpx.get(f"{prism_url}/api/v1/subjects/c/entitlement/f/value", headers=headers)
    assert (good.status_code, bad.status_code) == (200, 404)


def test_entitlement_values_of_each_kind_become_answers() -> None:
    """Metered values give the numbers (limit from usage + balance when the grant total is
    missing); boolean and static ones only ok; a body without hasAccess is not an answer."""
    assert read_openmeter({"hasAccess": False, "usage": 10, "balance": 0}) == (False, 10, 10, 0)
    assert read_openmeter({"hasAccess": True, "config": "{}"}) == (True, None, None, None)
    assert read_openmeter({"hasAccess": "yes"}) is None
    assert read_openmeter({"hasAccess": True, "usage": "5"}) is None
    assert read_openmeter([]) is None


def test_the_subject_and_feature_are_escaped_as_one_segment_each() -> None:
    """A slash in the customer id cannot reach another path."""
    url = openmeter_url("https://om.example", "org/1", "feat x")
    assert url == "https://om.example/api/v1/subjects/org%2F1/entitlements/feat%20x/value"
