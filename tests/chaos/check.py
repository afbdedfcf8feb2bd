"""The model: after a run, every accepted event must be in exactly one counted state.

For every key a process logged (``report()`` returned it), exactly one of:

- **delivered**: the server stored it, every arrival carried the same body, every arrival
  carried the ``Authorization`` of the lineage that reported it;
- **rejected**: in a journal's ``rejected/`` with a reason, and the server did reject it
  (or, when the reporting process's journal refused writes, the server named it in an
  answer that reached the client whole: counted as rejected, with nowhere to keep it);
- **expired**: in a journal's ``expired/``;
- **dropped**: named by ``on_drop`` with a reason, or counted in ``dropped_by_reason`` of
  the client that reported it (its stats, written at a normal exit);
- **lost in the kill window**: the process was killed with ``kill -9`` and the key is one
  the model lets it lose: in write_ahead mode (with a journal that takes writes) a key
  reported less than ``wal_window`` seconds before the kill; otherwise (spill, or a journal
  refusing spills) a key reported after the client's last truthy ``flush()``/``close()``.

Also: no key reaches the server that no process reported (except the one key a killed
process may have had returned without logging it), nothing is left in ``ready/``,
``tmp/`` or ``quarantine/`` after recovery, and each client's stats add up:
``reported == sent + journaled + rejected + deduplicated + dropped + queue_events`` (up to
the rejections of replayed events, which ``rejected`` also counts), with ``sent`` never
above what the server stored for that client.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.chaos.harness import Started
    from tests.chaos.journal_view import JournalView
    from tests.chaos.plan import Incarnation, Lineage, Plan
    from tests.chaos.server import ChaosServer, KeyRecord

DROP_LIKE_EXPIRED = "expired"  # on_drop also reports expiry; that is not a drop
# answers that name rejected keys (the hung and trickled ones only if the client waited)
NAMING_REJECTIONS = frozenset({"ok", "ok400", "slow", "hang", "trickle"})
CLEAN_ACKS = frozenset({"ok", "ok400"})  # a 200 answered at once


@dataclass
class KeyLog:
    proc: str
    gen: int
    t: float
    line: int


@dataclass
class ProcLog:
    """One process as its log, stats file and the harness saw it."""

    name: str
    lineage: Lineage
    inc: Incarnation
    forked: bool
    keys: list[tuple[str, KeyLog]] = field(default_factory=list)
    truthy_line: dict[int, int] = field(default_factory=dict)  # gen -> last truthy flush/close
    drops: dict[str, str] = field(default_factory=dict)  # key -> reason (on_drop)
    forks: dict[str, int] = field(default_factory=dict)  # child name -> exit status
    gens: set[int] = field(default_factory=set)
    ended: str | None = None
    stats: dict[str, dict[str, Any]] | None = None
    killed_at: float | None = None  # killed before it could write its stats
    kill_sent: float | None = None  # when the harness sent its group SIGKILL, if it did
    exit_code: int | None = None
    hung: bool = False
    stderr: str = ""


class Violations:
    """Violations grouped by kind: a count and the first few examples of each."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < 3:
            examples.append(example)

    def as_list(self) -> list[dict[str, Any]]:
        return [
            {"kind": k, "count": n, "examples": self.examples[k]}
            for k, n in sorted(self.counts.items())
        ]


def _read_log(path: Path, proc: ProcLog) -> None:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return
    for index, line in enumerate(lines):
        parts = line.split()
        if not parts:
            continue
        tag = parts[0]
        try:
            if tag == "K":
                gen, key, t = int(parts[1]), parts[2], float(parts[3])
                proc.keys.append((key, KeyLog(proc.name, gen, t, index)))
            elif tag in ("F", "C") and parts[2] == "1":
                proc.truthy_line[int(parts[1])] = index
            elif tag == "D":
                proc.drops[parts[2]] = parts[1]
            elif tag == "N":
                proc.gens.add(int(parts[1]))
            elif tag == "W":
                proc.forks[parts[1]] = int(parts[2])
            elif tag == "E":
                proc.ended = parts[1]
        except (IndexError, ValueError):
            continue  # not a line of ours: the checker reads on


def _arrivals(rec: KeyRecord | None) -> str:
    if rec is None or not rec.arrivals:
        return "never arrived"
    kinds = Counter(a.kind for a in rec.arrivals)
    return f"arrived {len(rec.arrivals)}x (" + ", ".join(f"{k} {n}" for k, n in kinds.items()) + ")"


def _how(proc: ProcLog, wal_window: float, k: KeyLog | None = None) -> str:
    o = proc.inc.options
    bits = [proc.name, o["durability"]]
    if proc.inc.journal_refuses:
        bits.append("journal refusing")
    if proc.forked:
        bits.append("forked child")
    if proc.killed_at is not None:
        if k is not None:
            bits.append(f"kill -9 {1000 * (proc.killed_at - k.t):.0f} ms after report")
        else:
            bits.append("kill -9")
        if k is not None and k.line < proc.truthy_line.get(k.gen, -1):
            bits.append("before a truthy flush")
    else:
        bits.append(f"end {proc.ended or '?'}")
        if k is not None and str(k.gen) not in (proc.stats or {}):
            bits.append("its client dropped unclosed")
    return ", ".join(b for b in bits if b)


def check(
    *,
    plan: Plan,
    out: Path,
    procs: dict[str, Started],
    server: ChaosServer,
    views: dict[str, JournalView],
    recovered: dict[str, dict[str, Any]],
    wal_window: float,
    harness_errors: list[str],
    kafka: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``kafka``: the evidence of a ``destination="kafka"`` run (``harness.run_one``): the
    relays, their journals, the topic's keys and the relays' credential."""
    v = Violations()
    for err in harness_errors:
        v.add("harness error", err)
    records = server.snapshot()

    # -- the processes, from their logs ---------------------------------------------------
    logs: dict[str, ProcLog] = {}
    lineage_of: dict[str, Lineage] = {}
    for lin in plan.lineages:
        for inc in lin.incarnations:
            started = procs.get(inc.name)
            forked = sorted(p.name[: -len(".log")] for p in out.glob(f"{inc.name}.f*.log"))
            names = [inc.name, *forked]
            for name in names:
                proc = ProcLog(name, lin, inc, forked=name != inc.name)
                _read_log(out / f"{name}.log", proc)
                stats_path = out / f"{name}.stats.json"
                if stats_path.exists():
                    proc.stats = json.loads(stats_path.read_text())
                if started is not None:
                    proc.hung = started.hung
                    proc.kill_sent = started.killed_at
                    if started.killed_at is not None and proc.stats is None:
                        proc.killed_at = started.killed_at
                    if not proc.forked:
                        proc.exit_code = started.exit_code
                err = out / f"{inc.name}.err"
                proc.stderr = err.read_text(errors="replace") if err.exists() else ""
                logs[name] = proc
                lineage_of[name] = lin

    owner: dict[str, KeyLog] = {}
    for proc in logs.values():
        for key, k in proc.keys:
            if key in owner:
                v.add("key returned twice", f"{key} by {owner[key].proc} and {proc.name}")
            owner[key] = k

    for proc in logs.values():
        if proc.hung:
            v.add("process hung", f"{proc.name} still running after the harness deadline")
        elif proc.killed_at is None and proc.stats is None:
            tail = proc.stderr.strip().splitlines()[-3:]
            v.add(
                "process died",
                f"{proc.name} (exit {proc.exit_code}) wrote no stats: " + " | ".join(tail),
            )
        if proc.kill_sent is None and not proc.forked and proc.exit_code not in (0, None):
            v.add("process failed", f"{proc.name} exit code {proc.exit_code}")
        for child, status in proc.forks.items():
            if status != 0:
                v.add("forked child failed", f"{child} exit status {status}")
        if "Traceback" in proc.stderr and not proc.forked:
            line = next((x for x in reversed(proc.stderr.splitlines()) if x.strip()), "Traceback")
            v.add("traceback on stderr", f"{proc.name}: {line.strip()[:200]}")

    # -- the journals after recovery ------------------------------------------------------
    where: dict[str, list[str]] = {}
    reasons: dict[str, list[str]] = {}
    for name, view in views.items():
        for key, folders in view.where.items():
            where.setdefault(key, []).extend(folders)
        reasons.update(view.reasons)
        for bad in view.unreadable:
            v.add("unreadable journal file", f"{name}/{bad}")
    for lname, rec in recovered.items():
        doc = rec["doc"]
        if doc is None:
            v.add("recovery failed", f"{lname}: exit {rec['exit_code']}, no result")
            continue
        if doc["replay"]["remaining_batches"]:
            v.add(
                "recovery left batches",
                f"{lname}: replay() ended with {doc['replay']['remaining_batches']} batches left",
            )
        if doc["stats"].get("reported", 0) or doc["stats"].get("sent", 0):
            v.add("recovery stats", f"{lname}: {doc['stats']}")

    # -- every logged key ------------------------------------------------------------------
    outcome: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    count_only: dict[tuple[str, int], int] = {}  # drops counted in stats, not named
    reject_budget: dict[tuple[str, int], int] = {}  # rejections counted, not in rejected/
    for proc in logs.values():
        for gen, stats in (proc.stats or {}).items():
            named = sum(
                1
                for key, k in proc.keys
                if k.gen == int(gen) and proc.drops.get(key, DROP_LIKE_EXPIRED) != DROP_LIKE_EXPIRED
            )
            count_only[(proc.name, int(gen))] = max(0, stats["dropped"] - named)
            kept = sum(1 for key, k in proc.keys if k.gen == int(gen) and key in reasons)
            rejected = stats.get("rejected", 0) + stats.get("rejected_on_replay", 0)
            reject_budget[(proc.name, int(gen))] = max(0, rejected - kept)
    relay_journals = set(kafka["journals"]) if kafka else set()
    relay_rejected = {
        key for name in relay_journals for key, fs in views[name].where.items() if "rejected" in fs
    }
    topic: dict[str, list[Any]] = kafka["topic"] if kafka else {}
    for key, k in owner.items():
        proc = logs[k.proc]
        lin = lineage_of[k.proc]
        rec = records.get(key)
        stored = rec is not None and rec.stored
        folders = set(where.get(key, ()))
        drop = proc.drops.get(key)
        if drop == DROP_LIKE_EXPIRED:
            drop = None
        if rec is not None:
            if rec.conflicts:
                v.add(
                    "conflicting body", f"{key} of {proc.name}: {len(rec.conflicts)} other bodies"
                )
            bearer = f"Bearer {kafka['relay_key'] if kafka else lin.api_key}"
            wrong = {a.auth for a in rec.arrivals} - {bearer}
            if wrong:
                v.add(
                    "wrong credential",
                    f"{key} of {proc.name} arrived with {sorted(map(str, wrong))}",
                )
            props = rec.body.get("properties", {})
            if isinstance(props, dict) and props.get("p") != proc.name:
                v.add("body of another process", f"{key} of {proc.name} carried p={props.get('p')}")
        if "rejected" in folders:
            if not server.rejects(key):
                v.add(
                    "rejected without cause",
                    f"{key} ({_how(proc, wal_window, k)}): reasons {reasons.get(key)}; "
                    + _arrivals(rec),
                )
            elif not reasons.get(key):
                v.add("rejected without a reason", f"{key} of {proc.name}")
            if stored:
                v.add("delivered and rejected", f"{key} of {proc.name}")
        for folder in ("ready", "tmp", "quarantine"):
            if folder in folders:
                v.add(f"left in {folder}/ after recovery", f"{key} of {proc.name}")
        if kafka and drop is not None and (stored or key in relay_rejected or key in topic):
            # In Kafka, though the producer's delivery report never reached the client (a
            # send timed out while the broker was frozen, a close() that gave up): it
            # cannot know; the relays shipped it.
            outcome["dropped, yet in Kafka (no delivery report)"] += 1
        elif (
            drop is not None
            and stored
            and not any(
                a.stored and a.kind in CLEAN_ACKS
                for a in rec.arrivals  # type: ignore[union-attr]
            )
        ):
            # Stored by an answer that never reached the client whole (a lost 200, a
            # trickle it timed out on, a send close() gave up on): it cannot know.
            outcome["dropped, yet stored by an answer the client never got"] += 1
        elif drop is not None and (stored or folders & {"rejected", "expired", "ready"}):
            v.add(
                "dropped and kept",
                f"{key} ({_how(proc, wal_window, k)}) named by on_drop ({drop}) yet "
                + ("delivered" if stored else f"in {sorted(folders)}"),
            )
        if stored:
            outcome["delivered"] += 1
            if "expired" in folders:
                outcome["delivered, a copy expired"] += 1
            continue
        if "rejected" in folders:
            outcome["rejected"] += 1
            continue
        if "expired" in folders:
            outcome["expired"] += 1
            continue
        if drop is not None:  # named by on_drop: dropped, whatever the server said of it
            outcome["dropped"] += 1
            dropped[drop] += 1
            continue
        if (
            proc.inc.journal_refuses
            and server.rejects(key)
            and rec is not None
            and any(a.kind in NAMING_REJECTIONS for a in rec.arrivals)
            and reject_budget.get((proc.name, k.gen), 1) > 0
        ):
            # The server named it and the client counted it rejected, but a journal that
            # refuses writes cannot keep it in rejected/: counted, so not a loss.
            if (proc.name, k.gen) in reject_budget:
                reject_budget[(proc.name, k.gen)] -= 1
            outcome["rejected, not kept (journal refusing)"] += 1
            continue
        if _kill_may_lose(proc, k, wal_window):
            outcome["lost in the kill window"] += 1
            continue
        budget = count_only.get((proc.name, k.gen), 0)
        if budget > 0:
            count_only[(proc.name, k.gen)] = budget - 1
            outcome["dropped"] += 1
            dropped["(counted, not named)"] += 1
            continue
        v.add("lost", f"{key} ({_how(proc, wal_window, k)}); {_arrivals(rec)}")
        outcome["lost"] += 1

    # -- keys nobody logged ---------------------------------------------------------------
    unlogged: Counter[str] = Counter()
    for key, rec in records.items():
        if key in owner:
            continue
        props = rec.body.get("properties", {})
        who = props.get("p") if isinstance(props, dict) else None
        unlogged[str(who)] += 1
        proc = logs.get(str(who))
        if proc is None or proc.killed_at is None:
            v.add("delivered, never reported", f"{key} with p={who}; {_arrivals(rec)}")
    for who, n in unlogged.items():
        proc = logs.get(who)
        if proc is not None and proc.killed_at is not None and n > 1:
            v.add("delivered, never reported", f"{n} unlogged keys of killed {who} (at most 1)")

    # -- stats of each client that was still referenced at a normal exit ---------------------
    figures: Counter[str] = Counter()
    for proc in logs.values():
        for gen_s, s in (proc.stats or {}).items():
            gen = int(gen_s)
            mine = [key for key, k in proc.keys if k.gen == gen]
            for name in ("sent", "journaled", "replayed", "rejected", "expired"):
                figures[f"stats {name}"] += s.get(name, 0)
            where_ = f"{proc.name} client {gen}"
            if s["reported"] != len(mine):
                v.add("stats: reported", f"{where_}: reported {s['reported']}, keys {len(mine)}")
            by_reason = s.get("dropped_by_reason", {})
            if s["dropped"] != sum(by_reason.values()):
                v.add("stats: dropped", f"{where_}: dropped {s['dropped']} != {by_reason}")
            total = sum(
                s.get(n, 0)
                for n in (
                    "sent",
                    "journaled",
                    "rejected",
                    "deduplicated",
                    "dropped",
                    "queue_events",
                )
            )
            surplus = total - s["reported"]
            if surplus < 0 or surplus > s.get("rejected", 0):
                v.add(
                    "stats do not add up",
                    f"{where_}: reported {s['reported']} vs sent {s['sent']} + journaled "
                    f"{s['journaled']} + rejected {s['rejected']} + deduplicated "
                    f"{s.get('deduplicated', 0)} + dropped {s['dropped']} + queued "
                    f"{s['queue_events']}",
                )
            if s.get("queue_events", 0):
                v.add("queued after exit", f"{where_}: {s['queue_events']} events still queued")
            stored_mine = sum(1 for key in mine if key in records and records[key].stored)
            if kafka:  # "sent" is "acknowledged by the broker"
                stored_mine = sum(1 for key in mine if key in topic)
            if s["sent"] > stored_mine:
                v.add(
                    "counted sent, not stored",
                    f"{where_}: stats sent {s['sent']}, "
                    + ("the topic holds" if kafka else "the server stored")
                    + f" {stored_mine} of its "
                    f"{len(mine)} keys ({_how(proc, wal_window)})",
                )
    for rec in recovered.values():
        if rec["doc"] is not None:
            for name in ("replayed", "rejected", "expired"):
                figures[f"stats {name}"] += rec["doc"]["stats"].get(name, 0)

    if server.malformed:
        v.add("malformed request", server.malformed[0])
    for err in server.handler_errors:
        v.add("server handler error", err)

    kafka_figures = _check_kafka(kafka, v, records, owner, logs, views) if kafka else {}

    kills = sum(1 for p in procs.values() if p.killed_at is not None)
    forks = sum(1 for p in logs.values() if p.forked)
    restarts = sum(max(0, len(lin.incarnations) - 1) for lin in plan.lineages)
    return {
        "violations": v.as_list(),
        "figures": {
            "reported": len(owner),
            **{f"events {k}": n for k, n in outcome.items()},
            **{f"dropped: {r}": n for r, n in dropped.items()},
            **dict(figures),
            "kills": kills,
            "forks": forks,
            "restarts": restarts,
            "requests": len(server.requests),
            "requests cut short": server.aborted,
            **{f"answers {k}": n for k, n in server.kind_counts.items()},
            **kafka_figures,
        },
    }


def _kill_may_lose(proc: ProcLog, k: KeyLog, wal_window: float) -> bool:
    """Whether the model lets ``kill -9`` lose this key (see the module docstring)."""
    if proc.killed_at is None:
        return False
    if k.line < proc.truthy_line.get(k.gen, -1):
        return False  # a truthy flush() had it delivered or journaled
    if proc.inc.options["durability"] == "write_ahead" and not proc.inc.journal_refuses:
        return k.t > proc.killed_at - wal_window
    return True


def _check_kafka(
    kafka: dict[str, Any],
    v: Violations,
    records: dict[str, KeyRecord],
    owner: dict[str, KeyLog],
    logs: dict[str, ProcLog],
    views: dict[str, JournalView],
) -> dict[str, int]:
    """What a Kafka run adds: the relays drained the topic and stopped cleanly, kept nothing
    in ready/, and every message of the topic (each reported by a process) reached the
    server or a relay's rejected/; nothing reached the server that is not in the topic."""
    side = kafka["side"]
    topic: dict[str, list[Any]] = kafka["topic"]
    if not side.drained:
        v.add("relays did not drain", f"after {side.drain_seconds}s: {side.drain_note}")
    for r in side.relays:
        err = side.out / f"relay.{r.name}.err"
        text = err.read_text(errors="replace") if err.exists() else ""
        if r.killed_at is None:
            if r.stopped_at is None:
                v.add("relay died", f"{r.name} exit {r.exit_code}: " + _tail(text))
            elif r.exit_code is None:
                v.add("relay did not stop", f"{r.name} still running after SIGTERM")
            elif r.exit_code != 0:
                v.add("relay failed", f"{r.name} exit {r.exit_code} on SIGTERM: " + _tail(text))
        if "Traceback" in text:
            line = next((x for x in reversed(text.splitlines()) if x.strip()), "Traceback")
            v.add("traceback on relay stderr", f"{r.name}: {line.strip()[:200]}")
    relay_rejected: set[str] = set()
    for name in kafka["journals"]:
        view = views[name]
        for folder in ("ready", "tmp", "quarantine", "expired"):
            if view.files.get(folder):
                v.add(f"relay journal: {folder}/", f"{name}: {view.files[folder]} file(s)")
        relay_rejected |= {key for key, fs in view.where.items() if "rejected" in fs}
    unlogged: Counter[str] = Counter()
    for key, (count, who) in topic.items():
        rec = records.get(key)
        if not (rec is not None and rec.stored) and key not in relay_rejected:
            v.add("in Kafka, never shipped", f"{key} of {who} ({count}x); {_arrivals(rec)}")
        if key not in owner:
            unlogged[str(who)] += 1
    for who, n in unlogged.items():
        proc = logs.get(who)
        if proc is None or proc.killed_at is None or n > 1:
            v.add("in Kafka, never reported", f"{n} unlogged key(s) of {who}")
    for key, rec in records.items():
        if key not in topic:
            v.add("delivered, not in Kafka", f"{key}: {_arrivals(rec)}")
    for key in relay_rejected - set(topic):
        v.add("relay rejected a key not in Kafka", key)
    stats = [s for r in side.relays if (s := _relay_final(side, r)) is not None]
    return {
        "kafka keys": len(topic),
        "kafka duplicate messages": sum(c - 1 for c, _ in topic.values()),
        "relay delivered": sum(s["delivered"] for s in stats),
        "relay rejected": sum(s["rejected"] for s in stats),
        "relay kills": sum(1 for r in side.relays if r.killed_at is not None),
        "broker freezes": sum(1 for e in side.events if e.endswith("SIGSTOP")),
    }


def _relay_final(side: Any, r: Any) -> dict[str, int] | None:
    from tests.chaos.kafka_mode import relay_stats

    return relay_stats(side.out, r)


def _tail(text: str) -> str:
    return " | ".join(text.strip().splitlines()[-3:])[:300]
