"""Processes for the Kafka lifecycle tests: ``child.py MODE URL JOURNAL_DIR [N]``.

exit     report N events (keys exit-0..) and return from the script without close()
fork     report N (parent-before-*), fork; the child reports N (child-*), flushes and leaves
         with os._exit; the parent reports N (parent-after-*), flushes, waits for the child
         and prints "child EXITCODE SECONDS" and "parent FLUSHRESULT"
wal      durability="write_ahead": report N (wal-*), print "reported", then wait to be killed
replay   a new process on the same journal: replay it and print the result
"""

from __future__ import annotations

import os
import sys
import time

import meterline

mode, url, journal_dir = sys.argv[1:4]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 0


def make(**options: object) -> meterline.Client:
    return meterline.Client(destination="kafka", base_url=url, journal_dir=journal_dir, **options)


def report_all(client: meterline.Client, prefix: str) -> None:
    for i in range(n):
        client.report(f"cust_{i % 5}", "api_call", {"i": i}, idempotency_key=f"{prefix}-{i}")


if mode == "exit":
    client = make(flush_interval=30)  # nothing goes before exit: the exit hook must send it
    report_all(client, "exit")
    print("reported", flush=True)
elif mode == "fork":
    client = make(flush_interval=0.05)
    report_all(client, "parent-before")
    forked = time.monotonic()
    pid = os.fork()
    if pid == 0:
        report_all(client, "child")
        result = client.flush(timeout=15)
        os._exit(0 if result.pending == 0 and result.sent == n else 3)
    report_all(client, "parent-after")
    result = client.flush(timeout=15)
    deadline = forked + 20
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print("child hung", flush=True)
        sys.exit(4)
    print("child", os.waitstatus_to_exitcode(status), round(time.monotonic() - forked, 2))
    print("parent", result.sent, result.pending, result.journaled, flush=True)
    client.close(timeout=5)
elif mode == "wal":
    client = make(durability="write_ahead", flush_interval=0.05, timeout=1)
    report_all(client, "wal")
    print("reported", flush=True)
    sys.stdin.read()  # until killed
elif mode == "replay":
    client = make(timeout=2)
    result = client.replay(timeout=30)
    print("replayed", result.replayed, result.remaining_batches, flush=True)
    client.close(timeout=5)
else:
    raise SystemExit(f"unknown mode {mode}")
