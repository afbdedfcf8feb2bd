"""A process that does not lead replay, idle after a blip: ``idle_follower.py URL JOURNAL_DIR``.

Reports 100 events while the endpoint fails, flushes (they are journaled: a backlog on
disk), prints "journaled", then waits for a line on stdin (the endpoint has recovered),
and measures the CPU time all its threads use over 2 s of idleness: "cpu <fraction>".
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time

import meterline

url, journal_dir = sys.argv[1:3]
client = meterline.Client(
    api_key="k",
    base_url=url,
    journal_dir=journal_dir,
    flush_interval=0.05,
    retry_attempts=1,
    probe_interval=0.2,
)
for i in range(100):
    client.report("cust_1", "api_call", {"i": i})
result = client.flush(timeout=10)
print(f"journaled {result.journaled}", flush=True)
sys.stdin.readline()
WINDOW = 2.0
before = resource.getrusage(resource.RUSAGE_SELF)
start = time.monotonic()
threading.Event().wait(WINDOW)  # the measurement window itself, not a wait for an outcome
after = resource.getrusage(resource.RUSAGE_SELF)
elapsed = time.monotonic() - start
used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
print(f"cpu {used / elapsed:.4f}", flush=True)
os._exit(0)
