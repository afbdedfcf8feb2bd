"""Shared fixtures: a fault server on 127.0.0.1, a private journal, clients closed after."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import meterline
from tests.support.fault_server import FaultServer

for _var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(_var, None)
for _var in [v for v in os.environ if v.startswith("METERLINE_")]:
    os.environ.pop(_var, None)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    srv = FaultServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    return tmp_path / "journal"


@pytest.fixture
def make_client(
    server: FaultServer, journal_dir: Path
) -> Iterator[Callable[..., meterline.Client]]:
    clients: list[meterline.Client] = []

    def make(**kwargs: Any) -> meterline.Client:
        kwargs.setdefault("api_key", "test-key")
        kwargs.setdefault("base_url", server.url)
        kwargs.setdefault("journal_dir", journal_dir)
        kwargs.setdefault("flush_interval", 0.05)
        client = meterline.Client(**kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close(timeout=2.0)
