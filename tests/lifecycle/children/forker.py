"""Fork scenarios: ``forker.py MODE URL JOURNAL_DIR``; prints lines the test checks.

basic     parent queues 50 events, forks; the child reports 20 and flushes; both print keys
hammer    a thread reports in a loop while the main thread forks 25 times; each child must
          report and flush within 10 s (exit 0), else it is killed and counted as stuck
cfork     like basic, but forked with libc's fork(), which runs no Python at-fork hook (uWSGI)
mp-pool   a multiprocessing pool (fork start method) of 2 workers runs 20 tasks
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.util
import os
import sys
import threading
import time
import warnings

import meterline

warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a threaded process

mode, url, journal_dir = sys.argv[1:4]


def make_client(**options: object) -> meterline.Client:
    return meterline.Client(api_key="k", base_url=url, journal_dir=journal_dir, **options)


def print_keys(who: str, keys: list[str]) -> None:
    print(who, " ".join(keys), flush=True)


def wait_until_worker_idle() -> None:
    """Until every meterline thread sleeps in a threading wait (no I/O, no lock held, not
    waiting for the GIL), 20 looks in a row."""
    deadline = time.monotonic() + 10
    calm = 0
    while calm < 20:
        if time.monotonic() > deadline:
            raise SystemExit("the meterline threads never went idle")
        frames = sys._current_frames()
        threads = [t for t in threading.enumerate() if t.name.startswith("meterline")]
        asleep = bool(threads) and all(
            (frame := frames.get(t.ident or 0)) is not None
            and frame.f_code.co_name == "wait"
            and frame.f_code.co_filename.endswith("threading.py")
            for t in threads
        )
        calm = calm + 1 if asleep else 0
        time.sleep(0.002)


def basic(fork: object, *, raw: bool = False) -> None:
    client = make_client(flush_interval=30)  # keep the parent's events pending at the fork
    parent_keys = [client.report("cust_p", "before_fork", {"i": i}) for i in range(50)]
    if raw:
        # A fork that runs no Python hook is only safe for CPython itself while no other
        # thread is busy (uWSGI forks from a master without running threads): wait until
        # the worker sleeps. Its 50 events stay queued, and the key pool stays shared.
        wait_until_worker_idle()
    pid = fork()  # type: ignore[operator]
    if pid == 0:
        child_keys = [client.report("cust_c", "in_child", {"i": i}) for i in range(20)]
        result = client.flush(timeout=10)
        print_keys("child", child_keys)
        os._exit(0 if result.sent == 20 and result.pending == 0 else 3)
    parent_keys += [client.report("cust_p", "after_fork", {"i": i}) for i in range(10)]
    _, status = os.waitpid(pid, 0)
    result = client.flush(timeout=10)
    print_keys("parent", parent_keys)
    print(f"child status {os.waitstatus_to_exitcode(status)} parent sent {result.sent}", flush=True)


def hammer() -> None:
    client = make_client(flush_interval=0.01)
    stop = threading.Event()
    reported = [0]

    def spin() -> None:
        while not stop.is_set():
            for _ in range(10):
                client.report("cust_p", "spin", {"n": reported[0]})
                reported[0] += 1
            stop.wait(0.0005)  # a bounded rate: the point is the overlap, not the volume

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    ok = stuck = failed = 0
    for _ in range(25):
        while reported[0] == 0:
            time.sleep(0.001)
        pid = os.fork()
        if pid == 0:
            try:
                client.report("cust_c", "in_child", {"pid": os.getpid()})
                result = client.flush(timeout=5)
                code = 0 if result.sent == 1 and result.pending == 0 else 3
                if code:
                    print(f"child flush: {result} {client.stats()}", flush=True)
            except BaseException as exc:
                print(f"child failed: {exc!r}", flush=True)
                code = 4
            os._exit(code)
        deadline = time.monotonic() + 10
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                ok, failed = (ok + 1, failed) if code == 0 else (ok, failed + 1)
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                stuck += 1
                break
            time.sleep(0.005)
    stop.set()
    thread.join()
    result = client.flush(timeout=10)
    print(f"children ok {ok} failed {failed} stuck {stuck}", flush=True)
    print(f"parent reported {reported[0]} pending {result.pending}", flush=True)


def _pool_init() -> None:
    # Pool workers leave with os._exit(): close the client from multiprocessing's finalizers.
    multiprocessing.util.Finalize(None, meterline.close, exitpriority=10)


def _pool_task(i: int) -> str:
    return meterline.report("cust_mp", "task", {"i": i})


def mp_pool() -> None:
    os.environ.update(
        METERLINE_API_KEY="k", METERLINE_BASE_URL=url, METERLINE_JOURNAL_DIR=journal_dir
    )
    os.environ["METERLINE_FLUSH_INTERVAL"] = "30"  # only the close at the worker's exit sends
    meterline.report("cust_mp", "parent", {"i": -1})  # the parent's client exists at the fork
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2, initializer=_pool_init) as pool:
        keys = pool.map(_pool_task, range(20))
        pool.close()
        pool.join()
    print_keys("tasks", keys)


if mode == "basic":
    basic(os.fork)
elif mode == "cfork":
    # PyDLL keeps the GIL during the call (CDLL would release it, and a child forked while
    # another thread holds the GIL hangs forever): a fork from C with no Python hook.
    basic(ctypes.PyDLL(None).fork, raw=True)
elif mode == "hammer":
    hammer()
elif mode == "mp-pool":
    mp_pool()
else:
    raise SystemExit(f"unknown mode {mode}")
