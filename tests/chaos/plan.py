"""A run drawn from a seed: the server's schedule, the lineages of processes, their actions.

A *lineage* is one application: an API key and a journal directory, run as a sequence of
*incarnations* (processes). An incarnation may be killed with ``kill -9`` at a drawn moment
and is then restarted on the same journal; it may fork, and each forked child reports its
own events. Everything here is plain data (JSON-able) so that a child gets its part as a
file and a violation can name the plan it came from.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

SCENARIOS = ("spill", "write_ahead", "kill", "fork", "disk_full", "mixed")

# How a process ends when it is not killed: close() and return; return without close()
# (the exit hook closes); drop the last client without closing it and return; or, for a
# process the harness will kill, wait idle until the kill comes.
ENDS = ("close", "exit", "drop")


@dataclass
class Proc:
    """What one process (an incarnation or a forked child) does."""

    actions: list[dict[str, Any]]
    end: str


@dataclass
class Incarnation:
    name: str
    options: dict[str, Any]
    proc: Proc
    kill: dict[str, float] | None = None  # {"after_keys": n, "pause": s}
    journal_refuses: bool = False  # the journal refuses spills in this process (disk full)


@dataclass
class Lineage:
    name: str
    api_key: str
    journal: str  # directory name under the run's folder (two lineages may share one)
    incarnations: list[Incarnation] = field(default_factory=list)


@dataclass
class Plan:
    seed: int
    scenario: str
    phases: list[tuple[str, float]]
    reject_permille: int
    lineages: list[Lineage]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line per incarnation: enough to see what the seed does."""
        lines = [
            f"seed {self.seed} scenario {self.scenario}: server "
            + " ".join(f"{n}:{d:.1f}s" for n, d in self.phases)
            + f", rejects {self.reject_permille}/1000"
        ]
        for lin in self.lineages:
            for inc in lin.incarnations:
                o = inc.options
                extra = []
                if inc.journal_refuses:
                    extra.append("journal refuses")
                if "journal_max_age" in o:
                    extra.append(f"max_age {o['journal_max_age']}")
                kill = f"kill -9 after {inc.kill['after_keys']:.0f} keys" if inc.kill else "no kill"
                lines.append(
                    f"  {inc.name} ({lin.journal}) {o['durability']} {kill}, "
                    f"end {inc.proc.end}: {summarize(inc.proc.actions)}"
                    + (f" [{', '.join(extra)}]" if extra else "")
                )
        return "\n".join(lines)


def summarize(actions: list[dict[str, Any]]) -> str:
    parts = []
    for a in actions:
        kind = a["do"]
        if kind == "burst":
            parts.append(f"report {a['n']}")
        elif kind == "fork":
            parts.append(f"fork({summarize(a['child']['actions'])}; end {a['child']['end']})")
        elif kind == "pause":
            parts.append(f"pause {a['seconds']:.2f}")
        elif kind in ("flush", "replay"):
            parts.append(f"{kind} {a['timeout']}")
        else:
            parts.append(kind)
    return ", ".join(parts)


def planned_keys(actions: list[dict[str, Any]]) -> int:
    return sum(a["n"] for a in actions if a["do"] == "burst")


_WEIGHTS: dict[str, dict[str, float]] = {
    # scenario: probabilities of the drawn features
    "spill": {"wal": 0.0, "kill": 0.0, "fork": 0.1, "refuse": 0.0},
    "write_ahead": {"wal": 1.0, "kill": 0.6, "fork": 0.1, "refuse": 0.0},
    "kill": {"wal": 0.5, "kill": 0.9, "fork": 0.1, "refuse": 0.1},
    "fork": {"wal": 0.4, "kill": 0.3, "fork": 1.0, "refuse": 0.1},
    "disk_full": {"wal": 0.4, "kill": 0.3, "fork": 0.1, "refuse": 1.0},
    "mixed": {"wal": 0.5, "kill": 0.4, "fork": 0.3, "refuse": 0.2},
}


def draw(seed: int, scenario: str | None = None, *, max_batch: int = 500) -> Plan:
    """The plan of run ``seed``; the scenario is drawn from the seed unless given."""
    rng = random.Random(seed)
    drawn = rng.choice(SCENARIOS)  # drawn even when given: a seed's plan is its own
    scenario = drawn if scenario is None else scenario
    if scenario not in _WEIGHTS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    w = _WEIGHTS[scenario]
    phases = _phases(rng, scenario)
    reject_permille = rng.choice([0, 10, 30, 80])
    n_lineages = rng.choice([1, 2, 2])
    shared = n_lineages == 2 and rng.random() < 0.3  # two credentials, one journal folder
    lineages = []
    for li in range(n_lineages):
        key = f"chaos-key-{seed}-{li}-{rng.randrange(16**6):06x}"
        lin = Lineage(f"L{li}", key, "j0" if shared else f"j{li}")
        n_inc = rng.choice([1, 2, 2, 3]) if scenario != "kill" else rng.choice([2, 3])
        for ii in range(n_inc):
            last = ii == n_inc - 1
            wal = rng.random() < w["wal"]
            refuses = rng.random() < w["refuse"] and not (last and scenario == "disk_full" and ii)
            if scenario == "disk_full" and ii == 0:
                refuses = True  # disk full for the first part of the run, then it frees up
            options = _options(rng, wal, refuses, expire=rng.random() < 0.06 and ii > 0)
            options["max_batch_events"] = min(options["max_batch_events"], max_batch)
            kill = None
            proc = _proc(rng, w["fork"], depth=0)
            if rng.random() < w["kill"] and planned_keys(proc.actions) > 0:
                total = planned_keys(proc.actions)
                kill = {"after_keys": float(rng.randint(1, total)), "pause": rng.uniform(0, 0.4)}
                if rng.random() < 0.4:
                    proc.end = "hold"
            lin.incarnations.append(Incarnation(f"{lin.name}.{ii}", options, proc, kill, refuses))
        lineages.append(lin)
    return Plan(seed, scenario, phases, reject_permille, lineages)


def _phases(rng: random.Random, scenario: str) -> list[tuple[str, float]]:
    names = ["healthy", "flaky", "outage", "portal", "hangs", "slow", "storm429"]
    weights = [3, 4, 2, 2, 2, 1, 1]
    if scenario == "disk_full":
        weights = [1, 2, 5, 2, 1, 1, 1]  # undeliverable, so the journal is what is asked
    phases = []
    for _ in range(rng.randint(4, 9)):
        name = rng.choices(names, weights=weights)[0]
        phases.append((name, round(rng.uniform(0.2, 1.4), 2)))
    return phases


def _options(rng: random.Random, wal: bool, refuses: bool, *, expire: bool) -> dict[str, Any]:
    batch = rng.choice([10, 50, 200, 500])
    options: dict[str, Any] = {
        "durability": "write_ahead" if wal else "spill",
        "flush_interval": rng.choice([0.02, 0.05, 0.1, 0.25]),
        "max_batch_events": batch,
        "timeout": rng.choice([0.3, 0.6, 1.0]),
        "connect_timeout": 0.5,
        "retry_attempts": rng.choice([1, 2, 3]),
        "retry_deadline": rng.choice([0.3, 1.0, 2.0]),
        "retry_after_max": 1.0,
        "probe_interval": rng.choice([0.1, 0.3, 0.8]),
        "replay_interval": rng.choice([0.3, 1.0]),
        "shutdown_timeout": rng.choice([1.0, 1.5, 2.0]),
        "journal_min_free_bytes": 0,
    }
    if refuses:
        if rng.random() < 0.6:
            options["journal_min_free_bytes"] = 1 << 60  # no disk ever has that much free
        else:
            options["journal_max_bytes"] = rng.choice([4_000, 20_000])  # a few batches, then full
        options["max_queue_events"] = max(batch, rng.choice([300, 1000, 100_000]))
    if expire:
        options["journal_max_age"] = rng.choice([0.5, 1.5])
    return options


def _proc(rng: random.Random, fork_p: float, *, depth: int) -> Proc:
    actions: list[dict[str, Any]] = []
    n_steps = rng.randint(3, 8) if depth == 0 else rng.randint(1, 4)
    forked = False
    for _ in range(n_steps):
        kind = rng.choices(
            ["burst", "flush", "pause", "fork", "renew", "replay"],
            weights=[6, 2, 2, 2 if fork_p else 0, 0.6, 0.6],
        )[0]
        if kind == "fork" and (depth > 0 or forked or rng.random() >= fork_p):
            kind = "burst"
        if kind == "burst":
            actions.append(
                {
                    "do": "burst",
                    "n": rng.choice([1, 5, 20, 60, 150, 400]),
                    "gap": rng.choice([0.0, 0.0, 0.0005, 0.003]),
                }
            )
        elif kind == "flush":
            actions.append({"do": "flush", "timeout": rng.choice([0.2, 1.0, 3.0])})
        elif kind == "pause":
            actions.append({"do": "pause", "seconds": round(rng.uniform(0.02, 0.6), 3)})
        elif kind == "fork":
            forked = True
            child = _proc(rng, 0.0, depth=1)
            actions.append({"do": "fork", "child": asdict(child)})
        elif kind == "renew":
            actions.append({"do": "renew"})
        else:
            actions.append({"do": "replay", "timeout": rng.choice([0.5, 2.0])})
    if not any(a["do"] == "burst" for a in actions):
        actions.insert(0, {"do": "burst", "n": rng.choice([5, 50]), "gap": 0.0})
    end = rng.choices(ENDS, weights=[4, 3, 2])[0]
    return Proc(actions, end)


@dataclass
class KafkaPlan:
    """The Kafka side of a run with ``destination="kafka"``: the children produce to a
    real broker and two ``meterline relay`` processes ship the topic to the chaos server.
    Moments are seconds after the run started: the relay killed with ``kill -9`` and when
    it comes back, and the windows in which the broker is frozen (SIGSTOP, then SIGCONT:
    unreachable, its memory-only data kept)."""

    relays: int
    batch_events: int  # the relays' --batch-events: smaller, more requests meet the faults
    kill_relay: int
    kill_at: float
    restart_after: float
    broker_stops: list[tuple[float, float]]

    def describe(self) -> str:
        stops = ", ".join(f"at {a:.1f}s for {d:.1f}s" for a, d in self.broker_stops)
        return (
            f"  kafka: {self.relays} relays of batches of {self.batch_events}; "
            f"relay r{self.kill_relay} kill -9 at "
            f"{self.kill_at:.1f}s, back {self.restart_after:.1f}s later; broker frozen: "
            + (stops or "never")
        )


def draw_kafka(seed: int) -> KafkaPlan:
    """The Kafka side of run ``seed``, from a generator of its own (the children's plan is
    the same as for any other destination)."""
    rng = random.Random(seed ^ 0x6B61666B61)
    stops: list[tuple[float, float]] = []
    if rng.random() < 0.75:
        at = rng.uniform(0.2, 3.0)
        for _ in range(rng.choice([1, 1, 2])):
            duration = round(rng.uniform(0.5, 3.0), 2)
            stops.append((round(at, 2), duration))
            at += duration + rng.uniform(0.3, 2.5)
    batch_events = rng.choice([20, 100, 500])
    return KafkaPlan(
        relays=2,
        batch_events=batch_events,
        kill_relay=rng.randrange(2),
        kill_at=round(rng.uniform(0.3, 5.0), 2),
        restart_after=round(rng.choice([0.0, rng.uniform(0.1, 1.5)]), 2),
        broker_stops=stops,
    )
