"""Forks at awkward moments: ``forks.py MODE URL JOURNAL_DIR``.

cfork8     fork from C with the GIL held (libc's fork() through ctypes.PyDLL, as uWSGI
           does: no Python at-fork hook runs) right after report(), 8 times. Each round
           reports 10 events and forks at once. No report() fills a batch and the flush
           timer is far away, so none wakes a thread: a thread waiting for the GIL at the
           instant of a C fork leaves the child's GIL state (its drop request and
           condition variables) pointing at a thread that does not exist there, which hangs
           CPython itself in the child whatever the library does. Each child reports 5
           events and flushes; it exits 0 only if all 5 were sent. Prints "children ok O
           failed F stuck S" (a child still running 10 s later is killed: stuck).
osfork     a fresh process reports its first event and os.fork()s at once, while the
           worker is starting; the child reports 5, flushes and exits 0 only if all 5 were
           sent. Prints "child status C".
inflight   reports a full batch, prints "sending", and os.fork()s when a line arrives on
           stdin (the test sends it once the endpoint holds that first request, unanswered);
           the child as in osfork. Prints "child status C".
cinflight  the same, forked from C with the GIL held (the worker is blocked in the socket,
           not waiting for the GIL, so CPython's own state stays sound in the child).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
import warnings

import meterline

warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a threaded process

mode, url, journal_dir = sys.argv[1:4]
# cfork8: batches of 500 (8 rounds of 10 never fill one) and a far timer, so no report()
# wakes a thread; osfork/inflight: a full batch of 20 wakes the worker to send at once.
client = meterline.Client(
    api_key="k",
    base_url=url,
    journal_dir=journal_dir,
    max_batch_events=500 if mode == "cfork8" else 20,
    flush_interval=30,
)


def child() -> None:
    code = 5
    try:
        for n in range(5):
            client.report("cust_c", "in_child", {"n": n, "pid": os.getpid()})
        result = client.flush(timeout=5)
        code = 0 if result.sent == 5 and result.pending == 0 else 3
    except BaseException:
        code = 4
    os._exit(code)


def wait_child(pid: int, deadline: float) -> int | None:
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


def meterline_threads_asleep() -> bool:
    """Every meterline thread is blocked in a threading wait (it needs no GIL right now)."""
    frames = sys._current_frames()
    for thread in threading.enumerate():
        if not thread.name.startswith("meterline"):
            continue
        frame = frames.get(thread.ident or 0)
        if frame is None or frame.f_code.co_name != "wait":
            return False
        if not frame.f_code.co_filename.endswith("threading.py"):
            return False
    return True


def settle() -> None:
    """Until the meterline threads have been asleep for 20 consecutive looks."""
    deadline, calm = time.monotonic() + 10, 0
    while calm < 20:
        if time.monotonic() > deadline:
            raise SystemExit("the meterline threads never went to sleep")
        calm = calm + 1 if meterline_threads_asleep() else 0
        time.sleep(0.002)


if mode == "cfork8":
    fork = ctypes.PyDLL(None).fork  # PyDLL keeps the GIL held during the call
    client.report("cust_p", "warm_up", {})
    if not client.flush(timeout=10):
        raise SystemExit("warm-up flush failed")
    ok = failed = stuck = 0
    for round_ in range(8):
        # The previous round's 10 events are sent first: left queued, the next round's
        # reports would complete a batch and wake a thread at the instant of the fork.
        if not client.flush(timeout=10):
            raise SystemExit("a round's flush failed")
        settle()
        for i in range(10):
            client.report("cust_p", "before_fork", {"round": round_, "i": i})
        pid = fork()
        if pid == 0:
            child()
        code = wait_child(pid, time.monotonic() + 10)
        if code is None:
            stuck += 1
        elif code == 0:
            ok += 1
        else:
            failed += 1
    print(f"children ok {ok} failed {failed} stuck {stuck}", flush=True)
    if not client.flush(timeout=10):
        raise SystemExit("the parent's own events were not delivered")
elif mode in ("osfork", "inflight", "cinflight"):
    if mode == "osfork":
        client.report("cust_p", "before_fork", {"i": 0})
    else:
        for i in range(20):
            client.report("cust_p", "before_fork", {"i": i})
        print("sending", flush=True)
        sys.stdin.readline()
    pid = ctypes.PyDLL(None).fork() if mode == "cinflight" else os.fork()
    if pid == 0:
        child()
    code = wait_child(pid, time.monotonic() + 10)
    print(f"child status {code}", flush=True)
else:
    raise SystemExit(f"unknown mode {mode}")
