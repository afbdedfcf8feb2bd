"""The Kafka side of a chaos run (``destination="kafka"``): a real broker, two relays.

The children produce to a topic of a real broker (Tansu, memory storage, 4 partitions);
two ``meterline relay`` processes, one consumer group, ship the topic to the chaos server
(Orb's API), so its fault phases hit the relays. On the plan's schedule (``KafkaPlan``) one
relay is killed with ``kill -9`` and started again on its journal, and the broker is frozen
with SIGSTOP for a window and thawed with SIGCONT (unreachable, its data kept: a killed
broker would lose it). After the children's recovery, ``drain()`` waits until the group has
committed every message of the topic and every relay says ``lag=0``, then ``stop()`` sends
SIGTERM and each relay must exit 0 within a bound.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from tests.chaos.plan import KafkaPlan
from tests.support.kafka import Broker

PARTITIONS = 4
DRAIN_DEADLINE = 60.0  # seconds for the relays to ship what the recovery left in Kafka
STOP_BOUND = 15.0  # seconds for a relay to exit after SIGTERM (its shutdown_timeout is 10)
POLL = 0.05
TOPIC_QUIET = 1.0  # seconds without a message: the topic was read to its end
KEY_HEADER = "meterline-idempotency-key"
_PROGRESS = re.compile(rb"^relay \S+: delivered=(\d+) rejected=(\d+) committed=(\d+) lag=(\S+)")


@dataclass
class RelayProc:
    """One incarnation of a relay member."""

    name: str  # r0, r0.1 (its restart), r1
    journal: str  # the journal folder under the run's folder, shared by its incarnations
    popen: subprocess.Popen[bytes]
    started: float
    killed_at: float | None = None
    stopped_at: float | None = None  # SIGTERM sent
    exit_code: int | None = None
    exit_seconds: float | None = None  # from SIGTERM to exit


@dataclass
class KafkaSide:
    plan: KafkaPlan
    out: Path
    orb_url: str
    api_key: str
    env: dict[str, str]
    cwd: Path
    broker: Broker = field(init=False)
    topic: str = field(init=False)
    group: str = field(init=False)
    relays: list[RelayProc] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # what the schedule did, and when
    errors: list[str] = field(default_factory=list)
    frozen: bool = False
    ends: dict[int, int] = field(default_factory=dict)  # partition -> offset after its last
    gaps: list[str] = field(default_factory=list)  # offsets the reader found missing
    drained: bool = False
    drain_seconds: float = 0.0
    drain_note: str = ""
    final_lags: dict[str, str] = field(default_factory=dict)  # relay -> its lag once drained
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _t0: float = 0.0
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    # -- start and the schedule ----------------------------------------------------------

    def start(self) -> None:
        self.broker = Broker(log=self.out / "broker.log").start()
        self.topic = self.broker.create_topic(partitions=PARTITIONS)
        self.group = f"chaos-{uuid.uuid4().hex[:8]}"
        for i in range(self.plan.relays):
            self._start_relay(f"r{i}", f"relay{i}")

    @property
    def url(self) -> str:
        return self.broker.url(self.topic)

    def _start_relay(self, name: str, journal: str) -> RelayProc:
        env = dict(self.env)
        env["METERLINE_API_KEY"] = self.api_key
        argv = [
            sys.executable,
            "-m",
            "meterline",
            "relay",
            "--from",
            self.url,
            "--group",
            self.group,
            "--to",
            "orb",
            "--base-url",
            self.orb_url,
            "--journal-dir",
            str(self.out / journal),
            "--consumer-config",
            "session.timeout.ms=6000",
            "--consumer-config",
            "heartbeat.interval.ms=500",
            "--progress-interval",
            "1",
            "--batch-events",
            str(self.plan.batch_events),
        ]
        with open(self.out / f"relay.{name}.err", "wb") as err:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=self.cwd,
                env=env,
                start_new_session=True,
            )
        proc = RelayProc(name, journal, popen, time.monotonic())
        with self._lock:
            self.relays.append(proc)
        return proc

    def begin_schedule(self) -> None:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._schedule, daemon=True)
        self._thread.start()

    def _at(self, moment: float) -> bool:
        """Wait until ``moment`` seconds after the run started; False if torn down."""
        return not self._stopping.wait(max(0.0, self._t0 + moment - time.monotonic()))

    def _note(self, text: str) -> None:
        with self._lock:
            self.events.append(f"{time.monotonic() - self._t0:6.2f}s {text}")

    def _schedule(self) -> None:
        try:
            steps: list[tuple[float, str, float]] = [(self.plan.kill_at, "kill", 0.0)]
            steps += [(at, "freeze", d) for at, d in self.plan.broker_stops]
            steps.sort()
            thaws: list[float] = []
            restart_at: float | None = None
            for at, what, duration in steps:
                # thaws and the restart due before this step come first
                while True:
                    due = sorted(
                        [(t, "thaw") for t in thaws]
                        + ([(restart_at, "restart")] if restart_at is not None else [])
                    )
                    if not due or due[0][0] > at:
                        break
                    t, kind = due[0]
                    if not self._at(t):
                        return
                    if kind == "thaw":
                        thaws.remove(t)
                        self._thaw()
                    else:
                        restart_at = None
                        self._restart()
                if not self._at(at):
                    return
                if what == "kill":
                    self._kill_relay()
                    restart_at = at + self.plan.restart_after
                else:
                    self._freeze()
                    thaws.append(at + duration)
            for t, kind in sorted(
                [(t, "thaw") for t in thaws]
                + ([(restart_at, "restart")] if restart_at is not None else [])
            ):
                if not self._at(t):
                    return
                if kind == "thaw":
                    self._thaw()
                else:
                    self._restart()
        except BaseException as exc:
            self.errors.append(f"kafka schedule: {type(exc).__name__}: {exc}")
        finally:
            self._thaw()

    def _victim(self) -> RelayProc:
        name = f"r{self.plan.kill_relay}"
        with self._lock:
            return [r for r in self.relays if r.name.split(".")[0] == name][-1]

    def _kill_relay(self) -> None:
        victim = self._victim()
        victim.killed_at = time.monotonic()
        _kill_group(victim.popen)
        victim.exit_code = victim.popen.poll()
        self._note(f"kill -9 relay {victim.name} (exit {victim.exit_code})")

    def _restart(self) -> None:
        victim = self._victim()
        proc = self._start_relay(f"{victim.name.split('.')[0]}.1", victim.journal)
        self._note(f"relay {proc.name} started on {victim.journal}")

    def _freeze(self) -> None:
        proc = self.broker.proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGSTOP)
            self.frozen = True
            self._note("broker SIGSTOP")

    def _thaw(self) -> None:
        proc = self.broker.proc
        if self.frozen and proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            self.frozen = False
            self._note("broker SIGCONT")

    def end_schedule(self) -> None:
        """Wait for the schedule's last step (the broker thawed, the killed relay back)."""
        if self._thread is not None:
            self._thread.join(timeout=30)
            if self._thread.is_alive():
                self.errors.append("kafka schedule: still running 30 s after the children")
        self._thaw()

    # -- the end ----------------------------------------------------------------------------

    def _committed(self, consumer: Any) -> dict[int, int]:
        tps = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=5)}

    def _progress(self, proc: RelayProc, since: int) -> list[str]:
        """The lag of each progress line written after byte ``since`` ("none": the relay
        holds no partition)."""
        try:
            data = (self.out / f"relay.{proc.name}.err").read_bytes()
        except FileNotFoundError:
            return []
        found = []
        pos = 0
        for line in data.splitlines(keepends=True):
            pos += len(line)
            m = _PROGRESS.match(line)
            if m and pos > since:
                lag = m.group(4).decode()
                found.append("none" if line.rstrip().endswith(b"partitions=[]") else lag)
        return found

    def live(self) -> list[RelayProc]:
        with self._lock:
            return [r for r in self.relays if r.killed_at is None and r.popen.poll() is None]

    def drain(self, arrivals: Any) -> None:
        """Wait until the group committed every message of the topic (``read_topic()``
        first: its ends), the relays printed ``lag=0`` (or hold no partition, or cannot
        tell: ``?``) since, and the server's arrivals stopped growing."""
        t0 = time.monotonic()
        deadline = t0 + DRAIN_DEADLINE
        consumer = Consumer(
            {"bootstrap.servers": self.broker.address, "group.id": self.group, "logger": None}
        )
        last = ""
        try:
            while time.monotonic() < deadline:
                try:
                    committed = self._committed(consumer)
                except Exception as exc:
                    last = f"committed offsets: {exc}"
                    time.sleep(POLL)
                    continue
                behind = {p: e for p, e in self.ends.items() if e > committed.get(p, -1) and e}
                if behind:
                    last = f"committed {committed}, the topic ends at {self.ends}"
                    time.sleep(POLL)
                    continue
                count = arrivals()
                marks = {}
                for r in self.live():
                    path = self.out / f"relay.{r.name}.err"
                    marks[r.name] = path.stat().st_size if path.exists() else 0
                says: dict[str, list[str]] = {}
                while time.monotonic() < deadline:
                    says = {r.name: self._progress(r, marks.get(r.name, 0)) for r in self.live()}
                    if all(lags for lags in says.values()):
                        break
                    time.sleep(POLL)
                else:
                    last = f"no progress line from the relays: {says}"
                    break
                if arrivals() != count:
                    last = "the server's arrivals still growing"
                    continue
                self.final_lags = {name: lags[-1] for name, lags in says.items()}
                self.drained = True
                return
            self.drain_note = last
        finally:
            self.drain_seconds = round(time.monotonic() - t0, 2)
            consumer.close()

    def stop(self) -> None:
        """SIGTERM every live relay; each must exit within ``STOP_BOUND``."""
        live = self.live()
        for r in live:
            r.stopped_at = time.monotonic()
            try:
                os.kill(r.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for r in live:
            sent = r.stopped_at or time.monotonic()
            try:
                r.exit_code = r.popen.wait(timeout=max(0.1, sent + STOP_BOUND - time.monotonic()))
                r.exit_seconds = round(time.monotonic() - sent, 2)
            except subprocess.TimeoutExpired:
                r.exit_code = None
        with self._lock:
            for r in self.relays:
                if r.exit_code is None and r.popen.poll() is not None and r.stopped_at is None:
                    r.exit_code = r.popen.returncode

    def read_topic(self) -> dict[str, list[Any]]:
        """Every message of the topic: idempotency key -> [messages carrying it, the
        ``p`` property (the process that reported it)]. Read from offset 0 of each
        partition until nothing more comes for a while: Tansu's high watermark is the
        last batch's base offset + 1, not the end of the partition, so neither it nor
        the end-of-partition event it drives can say where a partition ends. Sets
        ``self.ends``: the offset after each partition's last message."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.broker.address,
                "group.id": f"chaos-reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "logger": None,
            }
        )
        keys: dict[str, list[Any]] = {}
        ends: dict[int, int] = {p: 0 for p in range(PARTITIONS)}
        gaps: list[str] = []
        try:
            consumer.assign([TopicPartition(self.topic, p, 0) for p in range(PARTITIONS)])
            quiet_until = time.monotonic() + TOPIC_QUIET
            deadline = time.monotonic() + 30
            while time.monotonic() < min(quiet_until, deadline):
                for msg in consumer.consume(1000, timeout=0.2):
                    if msg.error() is not None:
                        continue
                    quiet_until = time.monotonic() + TOPIC_QUIET
                    p, offset = msg.partition() or 0, msg.offset() or 0
                    if offset != ends[p]:
                        gaps.append(f"p{p}: offset {offset} after {ends[p]}")
                    ends[p] = max(ends[p], offset + 1)
                    headers = dict(msg.headers() or [])
                    key = headers.get(KEY_HEADER)
                    name = key.decode() if isinstance(key, bytes) else f"(no key @{p}:{offset})"
                    try:
                        who = json.loads(msg.value() or b"{}").get("properties", {}).get("p")
                    except (ValueError, AttributeError):
                        who = None
                    entry = keys.setdefault(name, [0, who])
                    entry[0] += 1
        finally:
            consumer.close()
        self.ends = ends
        self.gaps = gaps
        return keys

    def teardown(self) -> None:
        self._stopping.set()
        self._thaw()
        with self._lock:
            relays = list(self.relays)
        for r in relays:
            _kill_group(r.popen)
        broker = getattr(self, "broker", None)
        if broker is not None:
            self._thaw()
            broker.stop()

    def describe(self) -> dict[str, Any]:
        return {
            "topic": getattr(self, "topic", None),
            "group": getattr(self, "group", None),
            "events": list(self.events),
            "relays": [
                {
                    "name": r.name,
                    "journal": r.journal,
                    "killed_at": r.killed_at,
                    "exit_code": r.exit_code,
                    "exit_seconds": r.exit_seconds,
                }
                for r in self.relays
            ],
            "drained": self.drained,
            "drain_seconds": self.drain_seconds,
            "drain_note": self.drain_note,
            "final_lags": self.final_lags,
            "ends": self.ends,
            "gaps": self.gaps,
        }


def _kill_group(popen: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        popen.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def relay_stats(out: Path, proc: RelayProc) -> dict[str, int] | None:
    """The counters of a relay's last progress line (its final one after SIGTERM)."""
    try:
        data = (out / f"relay.{proc.name}.err").read_bytes()
    except FileNotFoundError:
        return None
    found = None
    for line in data.splitlines():
        m = _PROGRESS.match(line)
        if m:
            found = {
                "delivered": int(m.group(1)),
                "rejected": int(m.group(2)),
                "committed": int(m.group(3)),
            }
    return found
