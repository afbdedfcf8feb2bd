"""Turn the rows of a benchmark run into ``RESULTS.md``: machine, tables, ratios, meaning."""

from __future__ import annotations

from typing import Any

from dest_results import section as destinations
from figures import (
    CPU,
    DASH,
    MAIN_CPU,
    NAMES,
    PEER_ORDER,
    TIMES,
    Med,
    Rows,
    cell,
    delivered,
    e2e_vs_raw,
    lat,
    medians,
    num,
    of,
    ratio,
    seconds,
    share,
    share_pct,
    span,
    table,
    table_row,
)
from findings import meaning, targets
from kafka_results import section as kafka


def _steady(med: Med, meta: dict[str, Any]) -> list[str]:
    s = med.get("steady")
    if not s:
        return []
    peers = [p for p in PEER_ORDER if p in s]
    calls = meta["calls"]["steady"]
    out = [
        "",
        f"### Caller cost and throughput: {calls[0]:,} calls in a tight loop (steady)",
        "",
    ]
    rows = [
        table_row("report() p50", s, peers, cell("p50_us", lat)),
        table_row("report() p99", s, peers, cell("p99_us", lat)),
        table_row("report() p99.9", s, peers, cell("p999_us", lat)),
        table_row("report() max", s, peers, cell("max_us", lat)),
        table_row("end-to-end events/s", s, peers, cell("events_per_s", num)),
        table_row("delivered / calls", s, peers, delivered),
        table_row("duplicates at the wire", s, peers, cell("duplicates", num)),
        table_row("CPU per delivered event, all threads", s, peers, cell(CPU, lat)),
        table_row("… of it on the caller's thread", s, peers, cell(MAIN_CPU, lat)),
        table_row("peak RSS growth", s, peers, cell("rss_growth_mb", lambda v: f"{num(v, 1)} MB")),
    ]
    out += table([""] + [NAMES[p] for p in peers], rows)
    return out


def _keeping(med: Med, meta: dict[str, Any]) -> list[str]:
    names = [n for n in ("outage", "exit", "flaky") if n in med]
    if not names:
        return []
    peers = [p for p in PEER_ORDER if any(p in med[n] for n in names)]
    o, e, f = (med.get(n, {}) for n in ("outage", "exit", "flaky"))
    calls = meta["calls"]

    def exit_cell(m: dict[str, Any]) -> str:
        text = of(m.get("delivered"), m.get("calls"))
        if m.get("delivered_after_restart") is not None:
            text += f" at exit; {num(m['delivered_after_restart'])} after restart + replay()"
        return text

    rows = [
        table_row("outage: report() p99 during the 503s", o, peers, cell("p99_us", lat)),
        table_row("outage: report() max", o, peers, cell("max_us", lat)),
        table_row("outage: calls made", o, peers, cell("calls", num)),
        table_row("outage: delivered after it heals", o, peers, delivered),
        table_row("outage: heal → last event in", o, peers, cell("heal_to_last_s", seconds)),
        table_row("exit without flush: delivered", e, peers, exit_cell),
        table_row("flaky: delivered", f, peers, delivered),
        table_row("flaky: duplicates at the wire", f, peers, cell("duplicates", num)),
        table_row("flaky: ids beyond those sent", f, peers, cell("extra_ids", num)),
    ]
    out = [
        "",
        "### Keeping the data: outage, exit, flaky server",
        "",
        f"Outage: the sink answers 503 for 5 s while {calls['outage'][0]:,} calls are made, paced "
        "evenly over those 5 s; then each library's flush path gets 30 s. Exit: "
        f"{calls['exit'][0]:,} calls, then the process returns without flushing (exit hooks "
        "run). Flaky: 20% of requests answer 500, half of them after the sink counted the "
        f"events; {calls['flaky'][0]:,} calls, then flush.",
        "",
    ]
    out += table([""] + [NAMES[p] for p in peers], rows)
    return out


def _web(med: Med, meta: dict[str, Any], scenario: str = "web") -> list[str]:
    w = med.get(scenario)
    if not w:
        return []
    peers = [p for p in ("none", *PEER_ORDER) if p in w]
    rows = [
        table_row("requests/s", w, peers, cell("rps", num)),
        table_row(f"requests/s, lowest{DASH}highest run", w, peers, lambda m: span(m, "rps", num)),
        table_row("requests/s vs no reporting", w, peers, cell("rps_vs_none", share_pct)),
        table_row("p99 latency", w, peers, cell("p99_ms", lambda v: f"{num(v, 2)} ms")),
        table_row("worker CPU per request", w, peers, cell("cpu_us_per_request", lat)),
        table_row("… of it on background threads", w, peers, cell("other_us_per_request", lat)),
        table_row("CPU per request vs no reporting", w, peers, cell("cpu_vs_none", share_pct)),
    ]
    web = meta["web"]
    route = "a WSGI route answering `ok`"
    title = "### Web app overhead: one report() per request"
    if scenario == "web_1ms":
        route = "a WSGI route that spends 1 ms of CPU, then answers `ok`"
        title = "### Web app overhead, an endpoint with 1 ms of CPU per request"
    out = [
        "",
        title,
        "",
        f"gunicorn, one sync worker, {route}; {meta['load_generator']} with "
        f"{web['connections']} connections for {web['seconds']:.0f} s per run. The worker is "
        "pinned to one CPU, the load generator and the sink to the other. CPU per request is "
        "the worker process's user+system time (all its threads) over the requests served: it "
        "is what reporting costs the application's core, and less sensitive than requests/s "
        "to other work on the machine.",
        "",
    ]
    if meta["load_generator"] == "asyncio":
        out[-1:-1] = [
            "",
            "**wrk was not installed** (`apt-get install wrk`): the fallback asyncio client "
            "opens a connection per request and may saturate before the application does, so "
            "requests/s can be the load generator's limit; CPU per request is not affected.",
        ]
    out += table([""] + [NAMES[p] for p in peers], rows)
    return out


def _ratios(med: Med) -> list[str]:
    s, w = med.get("steady", {}), med.get("web", {})
    me_s, me_w = s.get("meterline"), w.get("meterline")
    if not me_s:
        return []
    others = [p for p in PEER_ORDER if p != "meterline" and (p in s or p in w)]
    rows = [
        ["report() p50 (lower is better)"]
        + [ratio(me_s.get("p50_us"), s.get(p, {}).get("p50_us")) for p in others],
        ["report() p99 (lower is better)"]
        + [ratio(me_s.get("p99_us"), s.get(p, {}).get("p99_us")) for p in others],
        ["end-to-end events/s (higher is better)"]
        + [
            e2e_vs_raw(me_s)
            if p == "raw"
            else ratio(me_s.get("events_per_s"), s.get(p, {}).get("events_per_s"))
            for p in others
        ],
        ["share delivered in steady (higher is better)"]
        + [ratio(share(me_s), share(s.get(p, {}))) for p in others],
    ]
    if me_w:
        rows.append(
            ["web requests/s with reporting (higher is better)"]
            + [ratio(me_w.get("rps"), w.get(p, {}).get("rps")) for p in others]
        )
        rows.append(
            ["web CPU per request (lower is better)"]
            + [
                ratio(me_w.get("cpu_us_per_request"), w.get(p, {}).get("cpu_us_per_request"))
                for p in others
            ]
        )
    header = ["meterline ÷"] + [NAMES[p] for p in others]
    return ["", "### Ratios: meterline ÷ peer", "", *table(header, rows)]


def _targets(med: Med) -> list[str]:
    rows = [
        [t, measured, DASH if met is None else ("yes" if met else "**no**")]
        for t, measured, met in targets(med)
    ]
    return ["", "### meterline's targets", "", *table(["target", "measured", "met"], rows)]


def _machine(meta: dict[str, Any], med: Med) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    ceiling = meta.get("sink_ceiling", {})
    lines = [
        f"- Machine: {meta['cpu']}, {meta['cores']} cores; {meta['platform']}",
        f"- Python {meta['python']}; {versions}",
        f"- Date: {meta['date']}; total wall time {meta['wall_seconds'] / 60:.1f} min; "
        f"load average before {meta['load_before'][0]:.2f}, after {meta['load_after'][0]:.2f} "
        "(other work on the machine shows here)",
        f"- Runs: median of {meta['runs']} per figure ({meta['core_runs']} for meterline, its "
        "write-ahead mode and the raw limit in the steady scenario, and for meterline and no "
        f"reporting in the web one), each in a fresh process; {meta['pinning']}",
    ]
    if ceiling:
        lines.append(
            f"- Sink ceiling (one keep-alive connection, pre-built requests): "
            f"{num(ceiling['batch500']['events_per_s'])} events/s in 500-event batches, "
            f"{num(ceiling['single']['requests_per_s'])} one-event requests/s"
            + _headroom(ceiling["batch500"]["events_per_s"], med)
        )
    return lines


def _headroom(ceiling: float, med: Med) -> str:
    """How far the sink's ceiling is above the fastest end-to-end figure it served."""
    fastest = max(
        (m.get("events_per_s") or 0.0 for m in med.get("steady", {}).values()), default=0.0
    )
    if not fastest:
        return ""
    return f": {ceiling / fastest:.1f}{TIMES} the fastest end-to-end figure below"


METHOD = """\
### How it was measured

Every shipper runs with its default settings, in a fresh process, against a local sink
(`benchmarks/sink.py`) that speaks each one's batch endpoint and counts ids: Orb
`/v1/ingest` (`idempotency_key`), Segment `/v1/batch` (`messageId`), PostHog `/batch/`
(`uuid`), Mixpanel `/track` (`$insert_id`, form-encoded `data=`). Each event is a customer
id, an event name and two properties, one of them the call's index `n`: "delivered" counts
distinct `n` the sink received, "duplicates at the wire" counts events received more than
once under the same id (a server de-duplicates those), "ids beyond those sent" counts
events that arrived under more than one id (it cannot). Latency is `perf_counter_ns()`
around each call (the timing loop itself costs about 0.1 µs). End-to-end events/s is the
delivered events over the time from the first call to the sink's last new event, after the
library's own flush. The raw limit builds the same events with UUID4 keys, serializes 500
at a time with orjson and POSTs them over one keep-alive httpx connection on the caller's
thread: no retries, no journal, nothing in the background. orb-billing makes one
synchronous HTTP request per call, so it runs fewer calls ({orb_calls}). Mixpanel's
`BufferedConsumer` builds `https://` URLs from `api_host`, so its endpoint URLs are given
as `http://` and its retrying adapter is mounted for `http://` too; it flushes every 50
events on the caller's thread. meterline gets a temporary `journal_dir`; its flush path is
`flush()` then `replay()`. "meterline, write-ahead" is the same client with
`durability="write_ahead"` (every event journaled within a few milliseconds), measured in
the steady scenario only. CPU per delivered event is the process's CPU time from the first
call to the end of the flush over the events the sink received."""


def render(meta: dict[str, Any], results: Rows) -> str:
    med = medians(results)
    lines = ["# Benchmarks", "", *_machine(meta, med)]
    cut = [
        f"{scenario}/{peer}: {note}"
        for scenario, by_peer in med.items()
        for peer, m in by_peer.items()
        for note in m.get("notes", ())
    ]
    if cut:
        lines.append(f"- Runs cut short (their figures count what arrived): {'; '.join(cut)}")
    lines += _targets(med)
    lines += _steady(med, meta)
    lines += destinations(results.get("destinations", []), meta)
    lines += kafka(meta.get("kafka"))
    lines += _keeping(med, meta)
    lines += _web(med, meta)
    lines += _web(med, meta, "web_1ms")
    lines += _ratios(med)
    lines += meaning(med)
    orb_calls = ", ".join(f"{n:,} {name}" for name, (_, n) in meta["calls"].items())
    lines += ["", METHOD.format(orb_calls=orb_calls), ""]
    return "\n".join(lines)
