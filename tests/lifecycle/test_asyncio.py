"""asyncio: report() in a coroutine, aflush() and aclose() never block the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

import meterline
from tests.support.fault_server import FaultServer


async def _ticks_while(coro: Any) -> tuple[Any, float]:
    """Run ``coro`` while a ticker measures the loop's longest stall."""
    stall = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal stall
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            stall = max(stall, now - last)
            last = now

    task = asyncio.create_task(ticker())
    try:
        result = await coro
    finally:
        done.set()
        await task
    return result, stall


def test_report_in_a_coroutine_returns_at_once_with_a_slow_endpoint(
    server: FaultServer, make_client: Callable[..., meterline.Client]
):
    """report() inside a coroutine never waits for the network: 2,000 reports against an
    endpoint that takes 0.5 s per request keep the loop responsive."""
    server.delay = 0.5
    client = make_client(flush_interval=0.01)

    async def main() -> float:
        slowest = 0.0
        for i in range(2000):
            start = time.perf_counter()
            client.report("cust_1", "api_call", {"i": i})
            slowest = max(slowest, time.perf_counter() - start)
            if i % 100 == 0:
                await asyncio.sleep(0)
        return slowest

    slowest, stall = asyncio.run(_ticks_while(main()))
    assert slowest < 0.05, slowest
    assert stall < 0.25, stall


def test_aflush_and_aclose_run_off_the_loop(
    server: FaultServer, make_client: Callable[..., meterline.Client]
):
    """await aflush() and await aclose() wait for a slow endpoint while the loop keeps
    ticking, and settle every event."""
    server.delay = 0.3
    client = make_client(flush_interval=30)

    async def main() -> tuple[meterline.FlushResult, meterline.FlushResult]:
        for i in range(100):
            client.report("cust_1", "api_call", {"i": i})
        flushed = await client.aflush(timeout=10)
        for i in range(50):
            client.report("cust_1", "api_call", {"i": 100 + i})
        closed = await client.aclose(timeout=10)
        return flushed, closed

    (flushed, closed), stall = asyncio.run(_ticks_while(main()))
    assert flushed.sent == 100
    assert flushed.pending == 0
    assert closed.sent == 50
    assert closed.pending == 0
    assert server.count() == 150
    assert stall < 0.2, stall


def test_fastapi_lifespan_example_in_process(server: FaultServer, tmp_path, monkeypatch):
    """The FastAPI example's lifespan creates the client at startup and closes it with
    aclose() at shutdown, delivering what the requests reported."""
    pytest.importorskip("fastapi")
    import httpx

    monkeypatch.setenv("METERLINE_API_KEY", "k")
    monkeypatch.setenv("METERLINE_BASE_URL", server.url)
    monkeypatch.setenv("METERLINE_JOURNAL_DIR", str(tmp_path / "j"))
    monkeypatch.setenv("METERLINE_FLUSH_INTERVAL", "30")
    from examples.fastapi_app import app, lifespan

    async def main() -> set[str]:
        transport = httpx.ASGITransport(app=app)  # in process: no socket at all
        async with lifespan(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                answers = [await http.post("/complete", params={"tokens": i}) for i in range(10)]
            assert server.count() == 0
        return {a.json()["idempotency_key"] for a in answers}

    keys = asyncio.run(main())
    assert server.keys() == keys
    assert len(keys) == 10
