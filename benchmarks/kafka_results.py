"""The Kafka section of ``RESULTS.md``, from ``kafka_bench.py``'s document (medians of its
runs, with the lowest and highest run's events/s)."""

from __future__ import annotations

from typing import Any

from figures import DASH, TIMES


def _rate(row: dict[str, Any]) -> str:
    eps = row.get("events_per_s")
    if not eps:
        return DASH
    low, high = row.get("range_events_per_s") or (eps, eps)
    return f"{eps:,.0f} ({low:,.0f}{DASH}{high:,.0f})"


def section(doc: dict[str, Any] | None) -> list[str]:
    if not doc:
        return []
    mine, raw = doc.get("meterline", {}), doc.get("raw", {})
    r1, r3 = doc.get("relay1", {}), doc.get("relay3", {})
    ceiling = doc.get("server_ceiling_events_per_s") or 0.0

    def ratio(a: dict[str, Any], b: float | None) -> str:
        x = a.get("events_per_s")
        return f"{x / b:.2f}{TIMES}" if x and b else DASH

    lines = [
        "",
        "## Kafka: the producer and the relay",
        "",
        f"`benchmarks/kafka_bench.py` (in `make bench`): Tansu on 127.0.0.1 (memory storage), "
        f"{doc['n']:,} events per run, median of {doc['runs']} run(s) (lowest{DASH}highest), "
        f"{doc['seconds']:.0f} s. The producer runs start after 200 warm-up events (the "
        "idempotent producer's id and a first write to each of the 6 partitions), shown "
        "apart.",
        "",
        "| producer | report() p50 | p99 | end to end, events/s | ÷ raw | first delivery |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in (('meterline, destination="kafka"', mine), ("raw limit", raw)):
        lines.append(
            f"| {name} | {row.get('p50_us', 0):.1f} µs | {row.get('p99_us', 0):.1f} µs | "
            f"{_rate(row)} | {ratio(row, raw.get('events_per_s'))} | "
            f"{row.get('first_delivery_ms', 0):,.0f} ms |"
        )
    lines += [
        "",
        "| relay to the reference server | events/s | ÷ the server's ceiling |",
        "| --- | --- | --- |",
        f"| 1 `meterline relay` process | {_rate(r1)} | {ratio(r1, ceiling)} |",
        f"| 3 processes, one group | {_rate(r3)} | {ratio(r3, ceiling)} |",
        f"| ceiling: one process POSTing the same batches of 500 | {ceiling:,.0f} | 1.00{TIMES} |",
        "",
        "The raw producer hands bytes to librdkafka and waits once at the end; meterline "
        "waits for every batch's acknowledgements before it settles it (an event is counted "
        "sent on its delivery report), one batch at a time. The relays' rate is bounded by "
        "the reference server (SQLite, one writer), so 3 processes show the group's cost "
        "(rebalances as members join) more than its speed-up.",
    ]
    return lines
