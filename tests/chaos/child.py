"""A process of a chaos run: ``python -m tests.chaos.child SPEC.json``.

It builds a ``meterline.Client`` from the spec and plays its actions: bursts of
``report()``, ``flush()``, ``replay()``, pauses, dropping the client for a new one, and
``os.fork()`` (the forked child plays its own actions with its own log). Every process
writes a log, one line per ``os.write`` on an O_APPEND descriptor, so a line written
before a ``kill -9`` is there after it:

    P <pid> <name>                   the process started
    K <gen> <key> <monotonic>        report() returned this key (the event is accepted)
    F <gen> <0|1> <monotonic> ...    flush() returned, truthy or not (C: the same for close())
    D <reason> <key>                 on_drop named this key
    N <gen>                          a new client (the previous one was dropped unclosed)
    X <name> <pid>                   forked a child; W <name> <status>: reaped it
    R <gen> <replayed> <remaining>   replay() returned
    E <end>                          the actions are done; H: holding until killed

``gen`` numbers the clients of one process. At a normal exit the stats of every client
still referenced are written to ``<name>.stats.json``, after meterline's own exit hook has
closed them (this module registers its hook before meterline is imported, and atexit runs
hooks last-in first-out). ``role: recover`` replays a journal with the endpoint healthy and
writes what ``replay()``, ``close()`` and ``stats()`` said.
"""

from __future__ import annotations

import atexit
import gc
import json
import logging
import os
import random
import sys
import threading
import time
from typing import Any


class Ctx:
    """The current process: its name, log, clients (generations) and forked children."""

    def __init__(self, name: str, out_dir: str) -> None:
        self.name = name
        self.out_dir = out_dir
        self.fd = os.open(
            os.path.join(out_dir, f"{name}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        self.clients: dict[int, Any] = {}  # gen -> client, while referenced
        self.gen = -1
        self.forks: list[tuple[str, int]] = []
        self.seq = 0
        self.write_stats = True
        self.line(f"P {os.getpid()} {name}")

    def line(self, text: str) -> None:
        os.write(self.fd, (text + "\n").encode())


CTX: Ctx | None = None


def _stats_at_exit() -> None:
    ctx = CTX
    if ctx is None or not ctx.write_stats:
        return
    doc = {}
    for gen, client in ctx.clients.items():
        stats = client.stats()
        doc[str(gen)] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in stats.items()}
    path = os.path.join(ctx.out_dir, f"{ctx.name}.stats.json")
    with open(path + ".tmp", "w") as out:
        json.dump(doc, out)
    os.replace(path + ".tmp", path)


atexit.register(_stats_at_exit)  # before meterline's hook, so it runs after it

import meterline  # noqa: E402 - see the atexit registration above


def _on_drop(report: Any) -> None:
    ctx = CTX
    if ctx is not None:
        ctx.line("\n".join(f"D {report.reason} {key}" for key in report.idempotency_keys))


def _new_client(ctx: Ctx, spec: dict[str, Any]) -> Any:
    client = meterline.Client(
        api_key=spec["api_key"],
        destination=spec.get("destination", "orb"),
        base_url=spec["url"],
        journal_dir=spec["journal_dir"],
        on_drop=_on_drop,
        **spec["options"],
    )
    ctx.gen += 1
    ctx.clients[ctx.gen] = client
    ctx.line(f"N {ctx.gen}")
    return client


def _flush_line(tag: str, gen: int, result: Any) -> str:
    return (
        f"{tag} {gen} {int(bool(result))} {time.monotonic():.6f} sent={result.sent} "
        f"journaled={result.journaled} rejected={result.rejected} dropped={result.dropped} "
        f"pending={result.pending}"
    )


def life(ctx: Ctx, spec: dict[str, Any], proc: dict[str, Any], rng: random.Random) -> Ctx:
    """Play ``proc``'s actions; returns the context of the process that must end now (in a
    forked child, the child's own)."""
    for action in proc["actions"]:
        kind = action["do"]
        client = ctx.clients.get(ctx.gen)  # no reference survives a fork or a renew
        if kind == "burst":
            gap = action["gap"]
            for _ in range(action["n"]):
                n = ctx.seq
                ctx.seq += 1
                props = {"p": ctx.name, "g": ctx.gen, "n": n, "v": rng.randrange(1 << 30)}
                key = client.report(f"cust_{n % 5}", "chaos_call", props)
                ctx.line(f"K {ctx.gen} {key} {time.monotonic():.6f}")
                if gap:
                    time.sleep(gap)
        elif kind == "flush":
            ctx.line(_flush_line("F", ctx.gen, client.flush(timeout=action["timeout"])))
        elif kind == "pause":
            time.sleep(action["seconds"])
        elif kind == "replay":
            result = client.replay(timeout=action["timeout"])
            ctx.line(f"R {ctx.gen} {result.replayed} {result.remaining_batches}")
        elif kind == "renew":
            # Drop the client unclosed: it must still deliver (DESIGN §6). Its stats are
            # gone with it; its drops are still named through on_drop.
            del ctx.clients[ctx.gen]
            client = None
            gc.collect()
            _new_client(ctx, spec)
        elif kind == "fork":
            child_name = f"{ctx.name}.f{len(ctx.forks)}"
            client = None
            pid = os.fork()
            if pid == 0:
                return _forked(ctx, child_name, spec, action["child"], rng)
            ctx.forks.append((child_name, pid))
            ctx.line(f"X {child_name} {pid}")
    client = None
    for name, pid in ctx.forks:
        _, status = os.waitpid(pid, 0)
        ctx.line(f"W {name} {os.waitstatus_to_exitcode(status)}")
    ctx.line(f"E {proc['end']}")
    return _end(ctx, proc["end"])


def _forked(
    parent: Ctx, name: str, spec: dict[str, Any], proc: dict[str, Any], rng: random.Random
) -> Ctx:
    """In a forked child: a log of its own; the inherited client is its generation 0."""
    global CTX
    os.close(parent.fd)
    ctx = Ctx(name, parent.out_dir)
    ctx.gen = 0
    ctx.clients = {0: parent.clients[parent.gen]}
    parent.clients = {}  # the parent's frames stay on this stack: no reference there
    CTX = ctx
    return life(ctx, spec, proc, random.Random(rng.random()))


def _end(ctx: Ctx, end: str) -> Ctx:
    if end == "close":
        ctx.line(_flush_line("C", ctx.gen, ctx.clients[ctx.gen].close()))
    elif end == "drop":
        ctx.clients.pop(ctx.gen)
        gc.collect()
    elif end == "hold":
        ctx.line("H")
        threading.Event().wait()  # until the kill -9
    return ctx  # "exit": return; the exit hook closes the client


def recover(spec: dict[str, Any]) -> None:
    """Replay a journal with the endpoint healthy, then close; write what each said."""
    global CTX
    CTX = ctx = Ctx(spec["name"], spec["out_dir"])
    ctx.write_stats = False
    client = _new_client(ctx, spec)
    t0 = time.monotonic()
    r = client.replay(timeout=spec["timeout"])
    c = client.close()
    doc = {
        "replay": {
            "replayed": r.replayed,
            "rejected": r.rejected,
            "expired": r.expired,
            "remaining_batches": r.remaining_batches,
            "set_aside": r.set_aside,
            "ok": bool(r),
        },
        "close": {"ok": bool(c), "pending": c.pending, "dropped": c.dropped},
        "seconds": round(time.monotonic() - t0, 3),
        "stats": {k: (dict(v) if isinstance(v, dict) else v) for k, v in client.stats().items()},
    }
    with open(os.path.join(spec["out_dir"], f"{spec['name']}.recover.json"), "w") as out:
        json.dump(doc, out)


def _stamp(record: logging.LogRecord) -> bool:
    record.mono = time.monotonic()
    return True


def main() -> None:
    global CTX
    # meterline's warnings, stamped with the clock of the key log, for a kept run's reader
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(mono).6f %(process)d %(threadName)s %(levelname)s %(message)s")
    )
    handler.addFilter(_stamp)
    logging.getLogger("meterline").addHandler(handler)
    logging.getLogger("meterline").setLevel(logging.WARNING)
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    if spec["role"] == "recover":
        recover(spec)
        return
    CTX = Ctx(spec["name"], spec["out_dir"])
    _new_client(CTX, spec)
    life(CTX, spec, spec["proc"], random.Random(spec["seed"]))


if __name__ == "__main__":
    main()
