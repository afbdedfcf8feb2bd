"""``meterline usage``: the reference server's usage report for a time window (Per's getReport).

It asks ``GET /v1/usage?start=&end=[&customer=]`` and prints a table per customer: the value
of every billable metric (``meterline serve --metrics``), then the count and numeric sums per
event name. ``--json`` prints the server's answer as it came. The API key comes from
``--api-key`` or ``METERLINE_API_KEY`` and is never printed.

Exit codes: 0 the report was printed; 1 the server could not be reached or answered an
error; 2 the command line was wrong (no key, a time that is not ISO 8601, a 400).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from typing import Any

import httpx

__all__ = ["DEFAULT_URL", "add_usage", "fetch_report", "format_report"]

DEFAULT_URL = "http://127.0.0.1:8787/v1"
TIMEOUT = 30.0
MAX_REPORT_BYTES = 64 << 20  # a usage report larger than this is not one


class UsageError(Exception):
    """The report could not be had; ``code`` is the exit code (1 or 2)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def add_usage(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare the ``usage`` subcommand."""
    parser = subparsers.add_parser(
        "usage",
        help="print the reference server's usage report for a time window",
        description="Print what the reference server (meterline serve) counted in "
        "[START, END): each billable metric per customer, then counts and sums per event "
        "name. A date or a time without an offset is taken as UTC.",
    )
    parser.add_argument("--start", required=True, type=_instant, help="window start (included)")
    parser.add_argument("--end", required=True, type=_instant, help="window end (excluded)")
    parser.add_argument("--customer", help="report only this customer")
    parser.add_argument("--url", default=DEFAULT_URL, help="server base URL (default: %(default)s)")
    parser.add_argument(
        "--api-key",
        help="bearer token (default: $METERLINE_API_KEY, which keeps it out of the process "
        "list); never printed",
    )
    parser.add_argument("--json", action="store_true", help="print the server's JSON answer")
    parser.set_defaults(handler=_usage)


def _instant(text: str) -> str:
    """An ISO 8601 date or date-time as an RFC 3339 UTC string; naive means UTC."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 date or date-time: {text!r} (e.g. 2026-05-01 or 2026-05-01T12:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        utc = when.astimezone(timezone.utc)
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is outside the range of UTC dates") from None
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
        f"{utc.second:02d}.{utc.microsecond:06d}Z"
    )


def _usage(args: argparse.Namespace) -> int:
    api_key = args.api_key or os.environ.get("METERLINE_API_KEY")
    try:
        if not api_key:
            raise UsageError(
                "usage needs an API key: pass --api-key or set METERLINE_API_KEY (a server "
                "started without --api-key accepts any)",
                2,
            )
        report = fetch_report(args.url, api_key, args.start, args.end, args.customer)
    except UsageError as exc:
        print(f"meterline: {exc}", file=sys.stderr)  # noqa: T201
        return exc.code
    if args.json:
        print(json.dumps(report, indent=2))  # noqa: T201
    else:
        print(format_report(report), end="")  # noqa: T201
    return 0


def fetch_report(
    url: str,
    api_key: str,
    start: str,
    end: str,
    customer: str | None = None,
    *,
    timeout: float = TIMEOUT,
) -> dict[str, Any]:
    """The server's ``/usage`` answer for ``[start, end)``; raises :class:`UsageError`."""
    params = {"start": start, "end": end}
    if customer is not None:
        params["customer"] = customer
    endpoint = url.rstrip("/") + "/usage"
    # The whole request within ``timeout`` (httpx bounds each read, so a server trickling
    # its answer could hold the command for ever) and at most MAX_REPORT_BYTES of answer.
    deadline = time.monotonic() + timeout
    try:
        with httpx.stream(
            "GET",
            endpoint,
            params=params,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
        ) as response:
            raw = bytearray()
            for chunk in response.iter_bytes():
                raw += chunk
                if len(raw) > MAX_REPORT_BYTES:
                    raise UsageError(f"{endpoint} answered more than {MAX_REPORT_BYTES} bytes", 1)
                if time.monotonic() > deadline:
                    raise UsageError(f"{endpoint} did not answer within {timeout:g} s", 1)
    except httpx.HTTPError as exc:
        raise UsageError(f"cannot reach {endpoint}: {type(exc).__name__}", 1) from None
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if response.status_code != 200:
        detail = body.get("detail") if isinstance(body, dict) else None
        code = 2 if response.status_code == 400 else 1
        text = str(detail or response.reason_phrase)
        for secret in (f"Bearer {api_key}", api_key):
            text = text.replace(secret, "***")  # a server may echo the credential
        raise UsageError(
            f"{endpoint} answered {response.status_code}: {text[:300]}",
            code,
        )
    if not isinstance(body, dict) or not isinstance(body.get("usage"), list):
        raise UsageError(f"{endpoint} did not answer with a usage report", 1)
    return body


def format_report(report: dict[str, Any]) -> str:
    """A readable table of a ``/usage`` answer: metrics per customer, then events."""
    lines = [f"usage from {report.get('start')} to {report.get('end')} (end excluded)"]
    rows: list[dict[str, Any]] = report.get("metrics") or []
    if rows:
        names = list(dict.fromkeys(row["metric"] for row in rows))
        values: dict[str, dict[str, Any]] = {}
        for row in rows:
            values.setdefault(row["customer"], {})[row["metric"]] = row["value"]
        table = [["customer", *names]]
        table += [[who, *(_cell(got.get(n)) for n in names)] for who, got in values.items()]
        lines += ["", "billable metrics", *_aligned(table)]
    usage: list[dict[str, Any]] = report["usage"]
    lines += ["", "events"]
    if not usage:
        lines.append("  (no events counted in this window)")
    else:
        table = [["customer", "event", "count", "sums"]]
        for row in usage:
            sums = ", ".join(f"{k}={_cell(v)}" for k, v in sorted(row["sums"].items()))
            table.append([row["customer"], row["event_name"], _cell(row["count"]), sums])
        lines += _aligned(table)
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.6f}".rstrip("0").rstrip(".")
    return str(value)


def _aligned(table: list[list[str]]) -> list[str]:
    """Rows with columns padded: text left, numbers right (the first column is text)."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    out = []
    for row in table:
        cells = [row[0].ljust(widths[0])]
        for i, cell in enumerate(row[1:], 1):
            numeric = cell.replace(",", "").replace(".", "").lstrip("-").isdigit() or cell == "-"
            cells.append(cell.rjust(widths[i]) if numeric else cell.ljust(widths[i]))
        out.append("  " + "  ".join(cells).rstrip())
    return out
