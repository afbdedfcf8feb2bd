"""report() from a SIGALRM handler at a high rate: ``signal_report.py URL JOURNAL_DIR N KEYS``.

The main thread reports N events in a loop while an interval timer fires every 200 us and
its handler reports too. Then the timer stops, flush() runs, the keys of every report()
that returned go to KEYS, and a summary line is printed: "done reported R in_handler H
errors E flushed F".
"""

from __future__ import annotations

import signal
import sys

import meterline

url, journal_dir, n_text, keys_file = sys.argv[1:5]
client = meterline.Client(api_key="k", base_url=url, journal_dir=journal_dir, flush_interval=0.05)
keys: list[str] = []
in_handler = [0]
errors: list[str] = []


def on_alarm(signum: int, frame: object) -> None:
    # A well-behaved handler is not re-entered by its own signal: at this rate, CPython would
    # otherwise nest handlers until RecursionError whenever the GIL is contended.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    try:
        keys.append(client.report("cust_sig", "alarm", {"n": in_handler[0]}))
        in_handler[0] += 1
    except BaseException as exc:  # counted: report() must not raise here
        errors.append(repr(exc))
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})


signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
for i in range(int(n_text)):
    keys.append(client.report("cust_main", "loop", {"i": i}))
signal.setitimer(signal.ITIMER_REAL, 0, 0)
result = client.flush(timeout=10)
with open(keys_file, "w") as out:
    out.write("".join(k + "\n" for k in keys))
print(
    f"done reported {len(keys)} in_handler {in_handler[0]} errors {len(errors)} "
    f"flushed {bool(result)}",
    flush=True,
)
for error in errors[:5]:
    print("error", error, flush=True)
