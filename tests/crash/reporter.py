"""A child process for the crash tests: reports events and prints what meterline confirmed.

Usage: python -m tests.crash.reporter URL JOURNAL_DIR MODE
MODE "wal-hold": write_ahead, report 400 events, print "reported", then wait forever.
MODE "loop": report rounds of 50 events; after each flush() that settled them all, print
"confirmed <key> <key> ..." (they are delivered or journaled), forever.
"""

from __future__ import annotations

import sys
import threading

import meterline


def main() -> None:
    url, journal_dir, mode = sys.argv[1:4]
    if mode == "wal-hold":
        client = meterline.Client(
            api_key="k",
            base_url=url,
            journal_dir=journal_dir,
            durability="write_ahead",
            retry_attempts=50,
            retry_deadline=600,
        )
        for i in range(400):
            client.report("c", "e", {"i": i})
        print("reported", flush=True)
        threading.Event().wait()
    client = meterline.Client(
        api_key="k",
        base_url=url,
        journal_dir=journal_dir,
        flush_interval=0.02,
        retry_attempts=2,
        probe_interval=0.05,
    )
    n = 0
    while True:
        keys = [client.report("c", "e", {"i": n + i}) for i in range(50)]
        n += 50
        result = client.flush(timeout=30)
        if result.pending == 0 and result.dropped == 0:
            print("confirmed", *keys, flush=True)


if __name__ == "__main__":
    main()
