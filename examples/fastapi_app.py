"""A FastAPI app that owns a meterline client through its lifespan.

    meterline serve --port 8787 &
    export METERLINE_BASE_URL=http://127.0.0.1:8787/v1 METERLINE_API_KEY=dev-key
    uvicorn examples.fastapi_app:app --port 8000
    curl -X POST 'http://127.0.0.1:8000/complete?customer=cust_1&tokens=812'

``report()`` only validates and enqueues, so calling it inside ``async def`` does not
block the event loop. The lifespan closes the client with ``await client.aclose()``,
which runs the bounded close (at most ``shutdown_timeout``) off the loop; uvicorn runs
the lifespan's shutdown on SIGTERM and Ctrl-C. Without a lifespan, the process-wide
``meterline.report()`` client is closed by the exit hook instead.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

import meterline


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    client = meterline.Client()  # METERLINE_API_KEY, METERLINE_BASE_URL, ... from the env
    app.state.meterline = client
    try:
        yield
    finally:
        result = await client.aclose()
        print(f"meterline closed: {result}", flush=True)


app = FastAPI(lifespan=lifespan)


@app.post("/complete")
async def complete(
    request: Request, customer: str = "cust_1", tokens: int = 1
) -> dict[str, object]:
    client: meterline.Client = request.app.state.meterline
    key = client.report(customer, "api_call", {"tokens": tokens})
    return {"idempotency_key": key, "pid": os.getpid()}


@app.post("/complete-and-flush")
async def complete_and_flush(
    request: Request, customer: str = "cust_1", tokens: int = 1
) -> dict[str, object]:
    """For events that must be settled before answering: ``aflush`` waits off the loop."""
    client: meterline.Client = request.app.state.meterline
    key = client.report(customer, "api_call", {"tokens": tokens})
    result = await client.aflush(timeout=2.0)
    return {"idempotency_key": key, "settled": bool(result), "pid": os.getpid()}
