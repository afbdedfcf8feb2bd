"""One chaos run: the server, the processes of every lineage, kills and restarts, recovery.

``run_one(seed)`` draws the plan, starts the chaos server in a thread, runs each lineage's
incarnations one after the other (the lineages side by side), kills those the plan says
with ``kill -9`` (their whole process group, forked children included) at the drawn
moment, then heals the server, replays every journal in a recovery process and hands all
the evidence to ``check``. Every process is started in a session of its own and killed with
its group on the way out, whatever happened. With ``destination="kafka"`` the children
produce to a real broker and two relays ship the topic to the server (``kafka_mode``); the
server heals only after the children's recovery, and the relays must then drain the topic.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.chaos import check, journal_view
from tests.chaos.dialects import DIALECT_LIMITS
from tests.chaos.plan import Incarnation, Lineage, Plan, draw, draw_kafka
from tests.chaos.server import ChaosServer

if TYPE_CHECKING:
    from tests.chaos.kafka_mode import KafkaSide

ROOT = Path(__file__).resolve().parents[2]
WAL_WINDOW = 0.05  # seconds: what kill -9 may cost in write_ahead mode (DESIGN §3)
INCARNATION_DEADLINE = 60.0  # a process still running after this is hung
RECOVERY_TIMEOUT = 20.0
POLL = 0.01


def child_env(src: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("METERLINE_")
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(src), str(ROOT)])
    env["NO_PROXY"] = "127.0.0.1"
    return env


@dataclass
class Started:
    """A process the harness started (an incarnation or a recovery)."""

    name: str
    popen: subprocess.Popen[bytes]
    started: float
    killed_at: float | None = None
    hung: bool = False
    exit_code: int | None = None


@dataclass
class Run:
    plan: Plan
    out: Path
    server: ChaosServer
    wal_window: float
    src: Path
    procs: dict[str, Started] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    errors: list[str] = field(default_factory=list)
    stopping: bool = False  # set by kill_all(): no process starts after it
    kafka: KafkaSide | None = None  # destination "kafka": the broker and the relays

    @property
    def url(self) -> str:
        return self.kafka.url if self.kafka is not None else self.server.base_url

    @property
    def destination(self) -> str:
        return "kafka" if self.kafka is not None else self.server.dialect.name

    def api_key(self, lin: Lineage) -> str | None:
        return None if self.kafka is not None else lin.api_key  # Kafka takes no key

    def start(self, name: str, spec: dict[str, Any]) -> Started:
        with self.lock:
            if self.stopping:
                raise RuntimeError("the run is being torn down")
        path = self.out / f"{name}.spec.json"
        path.write_text(json.dumps(spec))
        with open(self.out / f"{name}.err", "wb") as err:
            popen = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.child", str(path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=ROOT,
                env=child_env(self.src),
                start_new_session=True,
            )
        proc = Started(name, popen, time.monotonic())
        with self.lock:
            self.procs[name] = proc
            late = self.stopping
        if late:  # kill_all() ran while this one was starting
            _kill_group(popen)
        return proc

    def kill_all(self) -> None:
        with self.lock:
            self.stopping = True
            procs = list(self.procs.values())
        for proc in procs:
            _kill_group(proc.popen)


def _kill_group(popen: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        popen.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _count_keys(path: Path, state: dict[str, Any]) -> tuple[int, bool]:
    """Keys logged so far and whether the process is done with its actions; reads only
    what was appended since the last call (``state`` keeps the offset)."""
    try:
        with open(path, "rb") as f:
            f.seek(state.get("pos", 0))
            data = f.read()
    except FileNotFoundError:
        return 0, False
    complete = data[: data.rfind(b"\n") + 1]
    state["pos"] = state.get("pos", 0) + len(complete)
    for line in complete.splitlines():
        if line.startswith(b"K "):
            state["keys"] = state.get("keys", 0) + 1
        elif line.startswith((b"H", b"E ")):
            state["done"] = True
    return state.get("keys", 0), state.get("done", False)


def _wait(popen: subprocess.Popen[bytes], deadline: float) -> int | None:
    while time.monotonic() < deadline:
        code = popen.poll()
        if code is not None:
            return code
        time.sleep(POLL)
    return None


def _run_incarnation(run: Run, lin: Lineage, inc: Incarnation, seed: int) -> None:
    spec = {
        "role": "run",
        "name": inc.name,
        "url": run.url,
        "destination": run.destination,
        "journal_dir": str(run.out / lin.journal),
        "api_key": run.api_key(lin),
        "options": inc.options,
        "proc": {"actions": inc.proc.actions, "end": inc.proc.end},
        "seed": seed,
        "out_dir": str(run.out),
    }
    proc = run.start(inc.name, spec)
    deadline = proc.started + INCARNATION_DEADLINE
    if inc.kill is not None:
        state: dict[str, Any] = {}
        log = run.out / f"{inc.name}.log"
        while time.monotonic() < deadline and proc.popen.poll() is None:
            keys, done = _count_keys(log, state)
            if keys >= inc.kill["after_keys"] or done:
                break
            time.sleep(POLL)
        if proc.popen.poll() is None and time.monotonic() < deadline:
            time.sleep(inc.kill["pause"])  # a drawn moment, part of the schedule
            if proc.popen.poll() is None:
                proc.killed_at = time.monotonic()
                _kill_group(proc.popen)
    code = _wait(proc.popen, deadline)
    if code is None:
        proc.hung = True
        _kill_group(proc.popen)
        code = proc.popen.poll()
    proc.exit_code = code


def _run_lineage(run: Run, lin: Lineage, index: int, seed: int) -> None:
    try:
        for i, inc in enumerate(lin.incarnations):
            _run_incarnation(run, lin, inc, seed * 1000 + index * 10 + i)
    except BaseException as exc:
        with run.lock:
            run.errors.append(f"harness: lineage {lin.name}: {type(exc).__name__}: {exc}")


def _recover(run: Run) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    seen: set[tuple[str, str | None]] = set()
    for lin in run.plan.lineages:
        if (lin.journal, run.api_key(lin)) in seen:
            continue
        seen.add((lin.journal, run.api_key(lin)))
        name = f"{lin.name}.recover"
        spec = {
            "role": "recover",
            "name": name,
            "url": run.url,
            "destination": run.destination,
            "journal_dir": str(run.out / lin.journal),
            "api_key": run.api_key(lin),
            "options": {
                "flush_interval": 0.05,
                "shutdown_timeout": 5.0,
                "journal_min_free_bytes": 0,
            },
            "timeout": RECOVERY_TIMEOUT,
            "out_dir": str(run.out),
        }
        proc = run.start(name, spec)
        code = _wait(proc.popen, proc.started + RECOVERY_TIMEOUT + 20)
        if code is None:
            proc.hung = True
            _kill_group(proc.popen)
        proc.exit_code = proc.popen.poll()
        path = run.out / f"{name}.recover.json"
        doc = json.loads(path.read_text()) if path.exists() else None
        results[lin.name] = {"journal": lin.journal, "exit_code": proc.exit_code, "doc": doc}
    return results


def _keep_evidence(run: Run) -> None:
    """What only the harness saw, next to the logs: each key's arrivals, and the kills."""
    records = {
        key: {
            "stored": rec.stored,
            "p": rec.body.get("properties", {}).get("p"),
            "conflicts": len(rec.conflicts),
            "arrivals": [[a.kind, a.status, a.stored, round(a.at, 6)] for a in rec.arrivals],
        }
        for key, rec in run.server.snapshot().items()
    }
    (run.out / "server.json").write_text(json.dumps(records, indent=0))
    procs = {
        p.name: {"killed_at": p.killed_at, "exit_code": p.exit_code, "hung": p.hung}
        for p in run.procs.values()
    }
    (run.out / "procs.json").write_text(json.dumps(procs, indent=1))
    if run.kafka is not None:
        (run.out / "kafka.json").write_text(json.dumps(run.kafka.describe(), indent=1))
    (run.out / "plan.txt").write_text(_describe(run) + "\n")


def _describe(run: Run) -> str:
    text = run.plan.describe()
    if run.kafka is not None:
        text += "\n" + run.kafka.plan.describe()
    return text


def run_one(
    seed: int,
    scenario: str | None = None,
    *,
    workdir: str | os.PathLike[str] | None = None,
    keep: bool = False,
    wal_window: float = WAL_WINDOW,
    lie_every: int = 0,
    src: str | os.PathLike[str] | None = None,
    destination: str = "orb",
) -> dict[str, Any]:
    """Run seed ``seed``; returns figures, violations and the plan's description.
    ``lie_every``: the server forgets every n-th acknowledged batch (a checker self-test).
    ``src``: the folder the children import meterline from (default: this checkout's).
    ``destination``: the vendor the server speaks and the clients ship to."""
    kafka_mode = destination == "kafka"
    plan = draw(seed, scenario, max_batch=DIALECT_LIMITS.get(destination, 500))
    out = Path(tempfile.mkdtemp(prefix=f"chaos-{seed}-", dir=workdir))
    relay_key = f"chaos-relay-{seed}-{seed * 7919 % 16**6:06x}"
    server = ChaosServer(
        seed=seed ^ 0x5EED,
        phases=plan.phases,
        api_keys={relay_key} if kafka_mode else {lin.api_key for lin in plan.lineages},
        reject_salt=str(seed),
        reject_permille=plan.reject_permille,
        lie_every=lie_every,
        dialect="orb" if kafka_mode else destination,
    )
    run = Run(plan, out, server, wal_window, Path(src) if src else ROOT / "src")
    t0 = time.monotonic()
    result: dict[str, Any]
    try:
        if kafka_mode:
            from tests.chaos.kafka_mode import KafkaSide

            run.kafka = KafkaSide(
                draw_kafka(seed), out, server.base_url, relay_key, child_env(run.src), ROOT
            )
            run.kafka.start()
        threads = [
            threading.Thread(target=_run_lineage, args=(run, lin, i, seed), daemon=True)
            for i, lin in enumerate(plan.lineages)
        ]
        if run.kafka is not None:
            run.kafka.begin_schedule()  # its moments count from the children's start
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if run.kafka is None:
            server.heal()
        else:  # the relays meet the server's faults until the children's recovery is done
            run.kafka.end_schedule()
        recovered = _recover(run)
        server.heal()
        journals = {lin.journal for lin in plan.lineages}
        kafka_evidence: dict[str, Any] | None = None
        if run.kafka is not None:
            topic = run.kafka.read_topic()  # the children are done: the topic is whole
            run.kafka.drain(lambda: len(server.requests))
            run.kafka.stop()
            kafka_evidence = {
                "side": run.kafka,
                "relay_key": relay_key,
                "topic": topic,
                "journals": sorted({r.journal for r in run.kafka.relays}),
            }
            journals |= {r.journal for r in run.kafka.relays}
        views = {name: journal_view.read(str(out / name)) for name in sorted(journals)}
        result = check.check(
            plan=plan,
            out=out,
            procs=run.procs,
            server=server,
            views=views,
            recovered=recovered,
            wal_window=wal_window,
            harness_errors=run.errors + (run.kafka.errors if run.kafka is not None else []),
            kafka=kafka_evidence,
        )
    finally:
        run.kill_all()
        if run.kafka is not None:
            run.kafka.teardown()
        server.stop()
    result["seconds"] = round(time.monotonic() - t0, 2)
    result["seed"] = seed
    result["scenario"] = plan.scenario
    result["destination"] = destination
    result["plan"] = _describe(run)
    if result["violations"] or keep:
        _keep_evidence(run)
        result["kept"] = str(out)
    else:
        shutil.rmtree(out, ignore_errors=True)
    return result
