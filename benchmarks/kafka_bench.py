"""The Kafka stage: the producer's cost and rate to a real broker, and the relay's rate.

    .venv/bin/python benchmarks/kafka_bench.py            # ~1-2 min on 2 cores
    .venv/bin/python benchmarks/kafka_bench.py --quick    # 1/10 of the events, one run

Starts Tansu (the test broker, memory storage) on 127.0.0.1, then, each in a fresh process:

- **producer**: 200 events reported and flushed (the idempotent producer gets its producer
  id and writes each partition once: reported apart as ``first_delivery_ms``), then
  ``--n`` calls of ``report()`` in a tight loop with ``destination="kafka"``, then
  ``flush()``: ``report()`` p50/p99 and end-to-end events/s (first call to every delivery
  report). Its raw limit, in the same run: the same Orb bytes made on the caller's thread
  with orjson and handed to one idempotent ``confluent_kafka.Producer`` (``acks=all``),
  then ``flush()`` -- no queue, thread, retry, settlement or journal.
- **relay**: a topic of ``--n`` events shipped to the reference server by 1 and by 3
  ``meterline relay`` processes (one group), timed from the first event the server stored
  to the last. Its ceiling, in the same run: one process POSTing the same bytes, 500 per
  request, over one keep-alive connection (the server's own rate for these batches).

Prints one JSON document (``--out`` writes it too); ``run.py`` puts it in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from stats import median, percentiles  # noqa: E402

CHILD_LIMIT = 180.0
WARM = 200  # events before the timed loop, over the same 100 customers (every partition)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", choices=("meterline", "raw"))
    parser.add_argument("--broker")
    parser.add_argument("--topic")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_producer(args.child, args.broker, args.topic, args.n)))
        return 0
    if args.quick:
        args.n, args.runs = args.n // 10, 1
    result = measure(args.n, args.runs)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


def measure(n: int, runs: int) -> dict[str, Any]:
    from tests.support.kafka import Broker

    started = time.monotonic()
    rows: dict[str, list[dict[str, Any]]] = {"meterline": [], "raw": [], "relay1": [], "relay3": []}
    ceiling: list[float] = []
    with tempfile.TemporaryDirectory(prefix="meterline-kafka-bench-") as tmp:
        broker = Broker(log=Path(tmp) / "broker.log").start()
        try:
            for run in range(runs):
                order = ("meterline", "raw") if run % 2 == 0 else ("raw", "meterline")
                for peer in order:
                    topic = broker.create_topic(partitions=6)
                    rows[peer].append(_child(peer, broker.address, topic, n))
                for members in (1, 3) if run % 2 == 0 else (3, 1):
                    rows[f"relay{members}"].append(_relay(broker, n, members, Path(tmp)))
                ceiling.append(_server_ceiling(n))
        finally:
            broker.stop()
    out: dict[str, Any] = {"n": n, "runs": runs, "seconds": round(time.monotonic() - started, 1)}
    for name, got in rows.items():
        out[name] = {
            key: median(r.get(key) for r in got)
            for key in ("p50_us", "p99_us", "events_per_s", "delivered", "first_delivery_ms")
            if any(key in r for r in got)
        }
        rates = [r["events_per_s"] for r in got if r.get("events_per_s")]
        out[name]["range_events_per_s"] = [min(rates), max(rates)] if rates else None
        out[name]["runs"] = got  # every run's row: one without a rate says why in its figures
    out["server_ceiling_events_per_s"] = median(ceiling)
    out["load_after"] = os.getloadavg()
    return out


# -- the producer, in a fresh process ----------------------------------------------------------


def _child(peer: str, broker: str, topic: str, n: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", peer, "--broker", broker, "--topic", topic]
    cmd += ["--n", str(n)]
    done = subprocess.run(cmd, capture_output=True, timeout=CHILD_LIMIT, check=True, cwd=ROOT)
    row: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return row


def _producer(peer: str, broker: str, topic: str, n: int) -> dict[str, Any]:
    import gc

    url = f"kafka://{broker}/{topic}"
    samples: list[int] = []
    clock = time.perf_counter_ns
    gc.collect()
    if peer == "meterline":
        import meterline

        journal = tempfile.mkdtemp(prefix="meterline-kafka-journal-")
        client = meterline.Client(destination="kafka", base_url=url, journal_dir=journal)
        report = client.report
        w0 = time.perf_counter()
        for i in range(WARM):  # the producer opens (its id: ~1 s on Tansu), every partition
            report(f"customer-{i % 100}", "warm_up", {"n": i})  # is written once
        client.flush(timeout=30)
        first_ms = (time.perf_counter() - w0) * 1000
        gc.collect()
        before = client.stats()["sent"]
        t0 = time.perf_counter()
        for i in range(n):
            a = clock()
            report(f"customer-{i % 100}", "api_call", {"n": i})
            samples.append(clock() - a)
        client.flush(timeout=120)
        elapsed = time.perf_counter() - t0
        # stats(), not flush()'s result: that counts only what was still unsettled when
        # flush() was called, and the events sent during the loop are not among them
        delivered = client.stats()["sent"] - before
        client.close()
    else:
        import orjson
        from confluent_kafka import Producer

        from meterline._stamps import format_ns

        producer = Producer(
            {"bootstrap.servers": broker, "enable.idempotence": True, "acks": "all"}
        )
        ok = [0]

        def done(err: Any, _msg: Any) -> None:
            if err is None:
                ok[0] += 1

        w0 = time.perf_counter()
        for i in range(WARM):
            producer.produce(topic, b"{}", f"customer-{i % 100}".encode())
        producer.flush(30)
        first_ms = (time.perf_counter() - w0) * 1000
        gc.collect()
        t0 = time.perf_counter()
        for i in range(n):
            a = clock()
            key = str(uuid.uuid4())
            customer = f"customer-{i % 100}"
            body = orjson.dumps(
                {
                    "idempotency_key": key,
                    "external_customer_id": customer,
                    "event_name": "api_call",
                    "timestamp": format_ns(time.time_ns()),
                    "properties": {"n": i},
                }
            )
            headers = [("meterline-idempotency-key", key.encode()), ("meterline-format", b"orb")]
            while True:
                try:
                    producer.produce(topic, body, customer, headers=headers, on_delivery=done)
                    break
                except BufferError:
                    producer.poll(0.01)
            producer.poll(0)
            samples.append(clock() - a)
        producer.flush(120)
        elapsed = time.perf_counter() - t0
        delivered = ok[0]
    pct = percentiles(samples)
    return {
        "peer": peer,
        "p50_us": pct["p50"] / 1000,
        "p99_us": pct["p99"] / 1000,
        "events_per_s": delivered / elapsed if delivered == n else None,
        "delivered": delivered,
        "first_delivery_ms": first_ms,
    }


# -- the relay ------------------------------------------------------------------------------------


def _relay(broker: Any, n: int, members: int, tmp: Path) -> dict[str, Any]:
    import meterline
    from meterline.server import ReferenceServer

    topic = broker.create_topic(partitions=6)
    client = meterline.Client(
        destination="kafka", base_url=broker.url(topic), journal_dir=tmp / f"fill-{topic}"
    )
    for i in range(n):
        client.report(f"customer-{i % 100}", "api_call", {"n": i})
    client.flush(timeout=120)
    client.close()
    server = ReferenceServer(api_keys=["bench-key"]).start()
    env = {**os.environ, "METERLINE_API_KEY": "bench-key", "PYTHONPATH": str(ROOT / "src")}
    group = f"bench-{uuid.uuid4().hex[:8]}"
    procs = []
    try:
        for m in range(members):
            cmd = [sys.executable, "-m", "meterline", "relay", "--from", broker.url(topic)]
            cmd += ["--group", group, "--to", "orb", "--base-url", server.url]
            cmd += ["--journal-dir", str(tmp / f"relay-{group}-{m}")]
            cmd += ["--consumer-config", "session.timeout.ms=6000"]
            cmd += ["--consumer-config", "heartbeat.interval.ms=500"]
            procs.append(
                subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        first = None
        end = time.monotonic() + CHILD_LIMIT
        count = 0
        while time.monotonic() < end:
            count = server.event_count()
            if count and first is None:
                first = time.monotonic()
            if count >= n:
                break
            time.sleep(0.02)  # polling the server's count, not waiting for a result
        last = time.monotonic()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        server.stop()
    rate = (count / (last - first)) if first is not None and count >= n and last > first else None
    return {"peer": f"relay{members}", "events_per_s": rate, "delivered": count}


def _server_ceiling(n: int) -> float:
    import httpx
    import orjson

    from meterline._stamps import format_ns
    from meterline.server import ReferenceServer

    server = ReferenceServer(api_keys=["bench-key"]).start()
    bodies = []
    now = format_ns(time.time_ns())
    for start in range(0, n, 500):
        events = [
            {
                "idempotency_key": str(uuid.uuid4()),
                "external_customer_id": f"customer-{i % 100}",
                "event_name": "api_call",
                "timestamp": now,
                "properties": {"n": i},
            }
            for i in range(start, min(n, start + 500))
        ]
        bodies.append(orjson.dumps({"events": events}))
    headers = {"Authorization": "Bearer bench-key", "Content-Type": "application/json"}
    try:
        with httpx.Client(timeout=30) as http:
            t0 = time.perf_counter()
            for body in bodies:
                http.post(f"{server.url}/ingest", content=body, headers=headers).raise_for_status()
            elapsed = time.perf_counter() - t0
    finally:
        server.stop()
    return n / elapsed


if __name__ == "__main__":
    sys.exit(main())
