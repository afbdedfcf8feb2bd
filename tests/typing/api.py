"""Uses the public API as a user would, so that `mypy --strict` checks its types."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import meterline
from meterline.testing import FlakyTransport, RecordingTransport, TransportError, wait_until


def on_drop(report: meterline.DropReport) -> None:
    keys: tuple[str, ...] = report.idempotency_keys
    print(report.reason, report.count, len(keys))


def on_error(exc: BaseException, info: dict[str, object]) -> None:
    print(type(exc).__name__, info)


def use_client() -> None:
    transport = RecordingTransport()
    with meterline.Client(
        transport=transport,
        journal_dir="/tmp/meterline-typing",
        flush_interval=0.5,
        durability="write_ahead",
        on_drop=on_drop,
        on_error=on_error,
    ) as client:
        key: str = client.report("cust_1", "api_call", {"tokens": 1, "model": "m", "ok": True})
        client.report("cust_1", "api_call", timestamp=datetime.now(timezone.utc))
        client.report("cust_1", "api_call", None, idempotency_key=key)
        result: meterline.FlushResult = client.flush(timeout=1.0)
        pending: int = result.pending
        stats: meterline.Stats = client.stats()
        sent: int = stats["sent"]
        replayed: meterline.ReplayResult = client.replay(timeout=0.1)
        print(pending, sent, bool(replayed), client.config.base_url)
    wait_until(lambda: transport.events, timeout=1.0)


def use_flaky() -> meterline.Client:
    flaky = FlakyTransport([503, TransportError("refused"), meterline.Response(200)])
    return meterline.Client(transport=flaky)


async def use_async(client: meterline.Client) -> meterline.FlushResult:
    await client.aflush(timeout=1.0)
    return await client.aclose()


async def use_send(client: meterline.Client) -> str:
    receipt: meterline.Receipt = client.send("cust_1", "credits_used", {"n": 1}, timeout=5.0)
    try:
        again = await client.asend(
            "cust_1", "credits_used", idempotency_key=receipt.idempotency_key
        )
    except meterline.EventRejectedError as exc:
        reasons: list[str] = exc.reasons
        return "; ".join(reasons)
    except (meterline.DeliveryTimeoutError, meterline.EndpointRefusedError) as exc:
        status: int | None = exc.status
        return f"{exc.idempotency_key} {status} {exc.attempts}"
    return again.status


def use_default() -> None:
    meterline.configure(api_key="k", base_url="http://127.0.0.1:8787/v1")
    meterline.report("cust_1", "api_call")
    meterline.flush(timeout=1.0)
    meterline.close()
    try:
        meterline.report("", "x")
    except meterline.InvalidEventError as exc:
        print(exc.field, exc.rule)


asyncio.run(use_async(use_flaky()))
