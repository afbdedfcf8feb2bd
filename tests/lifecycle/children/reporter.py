"""A bare script for the exit and signal tests: ``reporter.py MODE URL JOURNAL_DIR [N]``.

Options come from METERLINE_* variables; the keys it reported go to $KEYS_FILE, one a line.
exit            report N events and return (no flush, no close)
atexit-report   the first report() happens inside an atexit handler
atexit-flush    report at module level, flush() inside an atexit handler
atexit-default  meterline.report() + meterline.flush() inside an atexit handler
sigterm         install_sigterm_handler(), report N, print "ready", wait for a signal
sigterm-host    the same after installing a host handler that prints "host handler"
wal-backoff     write-ahead; report 1, print "first", read a line, report N, print "reported"
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading

import meterline

mode, url, journal_dir = sys.argv[1:4]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 100
keys: list[str] = []


def save_keys() -> None:
    with open(os.environ["KEYS_FILE"], "w") as out:
        out.write("".join(k + "\n" for k in keys))


if os.environ.get("KEYS_FILE"):
    atexit.register(save_keys)  # atexit runs it before meterline's own hook (LIFO)

client = meterline.Client(api_key="k", base_url=url, journal_dir=journal_dir)

if mode == "exit":
    keys += [client.report("cust_1", "api_call", {"i": i}) for i in range(n)]
    print(f"reported {n}", flush=True)
elif mode == "atexit-report":

    def late_report() -> None:
        keys.append(client.report("cust_1", "shutdown", {"i": 0}))
        print("reported in atexit", flush=True)

    atexit.register(late_report)
elif mode == "atexit-flush":
    keys.append(client.report("cust_1", "api_call", {"i": 0}))

    def late_flush() -> None:
        print(f"flush in atexit: {bool(client.flush(timeout=5))}", flush=True)

    atexit.register(late_flush)
elif mode == "atexit-default":

    def late_default() -> None:
        keys.append(meterline.report("cust_1", "api_call", {"i": 0}))
        print(f"default flush in atexit: {bool(meterline.flush(timeout=5))}", flush=True)

    atexit.register(late_default)
elif mode in ("sigterm", "sigterm-host"):
    if mode == "sigterm-host":

        def host_handler(signum: int, frame: object) -> None:
            print("host handler", flush=True)

        signal.signal(signal.SIGTERM, host_handler)
    meterline.install_sigterm_handler()
    keys += [client.report("cust_1", "api_call", {"i": i}) for i in range(n)]
    print("ready", flush=True)
    threading.Event().wait()
elif mode == "wal-backoff":
    client = meterline.Client(
        api_key="k",
        base_url=url,
        journal_dir=journal_dir,
        durability="write_ahead",
        retry_attempts=50,
        retry_deadline=600,
    )
    keys.append(client.report("cust_1", "api_call", {"i": 0}))
    print("first", flush=True)
    sys.stdin.readline()
    keys += [client.report("cust_1", "api_call", {"i": i}) for i in range(1, n + 1)]
    save_keys()
    print("reported", flush=True)
    threading.Event().wait()
else:
    raise SystemExit(f"unknown mode {mode}")
