"""Fixtures: a ReferenceServer on 127.0.0.1 with a hand-moved clock, and an httpx client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from meterline.server import ReferenceServer
from tests.server.helpers import API_KEY, Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reference(clock: Clock) -> Iterator[ReferenceServer]:
    with ReferenceServer(api_keys=[API_KEY], clock=clock) as server:
        yield server


@pytest.fixture
def api(reference: ReferenceServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=reference.url, headers=headers, timeout=10.0) as client:
        yield client
