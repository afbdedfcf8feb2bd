"""The destinations stage: meterline's steady figures for each destination, fresh processes.

Each run resets the sink under its own label and sets it to speak only that destination's
vendor (``vendors.py``), starts ``dest_drive.py`` pinned to the driver CPU, and turns the
driver's JSON and the sink's counts into a row like the steady scenario's. A row is only
counted when the sink saw exactly the calls made, each once, on that vendor's paths, all
answered with its success (and, for Stripe, a session opened): otherwise it keeps no
events/s and says why in ``note``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import suite
import vendors
from dest_drive import ENTRIES

HERE = Path(__file__).resolve().parent
LIMIT = 120.0  # seconds one driver process may take before it is killed


def calls(quick: bool) -> int:
    """Calls per run: the steady scenario's."""
    return 5_000 if quick else 50_000


def order(run: int) -> list[str]:
    """The entries (``dest_drive.ENTRIES``) rotated by ``run``, so that a slow moment of
    the machine does not always hit the same one."""
    names = list(ENTRIES)
    k = run % len(names)
    return names[k:] + names[:k]


def run_destination(ctx: suite.Context, entry: str, run: int, n: int) -> dict[str, Any]:
    """One driver process for ``entry`` (a destination); the row of figures for this run."""
    destination, batch = ENTRIES[entry]
    label = f"destinations-{entry}-{run}"
    ctx.control.reset(label, vendor=destination)
    journal = ctx.work / label / "journal"
    journal.mkdir(parents=True)
    driver = _drive(ctx, destination, batch, label, journal, n)
    counts = ctx.control.settle(n, quiet=0.3, limit=10.0)
    row = suite.ROWS["steady"](driver, counts)
    row.update(peer=entry, run=run, calls=driver.get("calls", n), batch=driver.get("batch"))
    row["sessions"] = counts["paths"].get(vendors.STRIPE_SESSION, 0)
    problems = check(destination, n, driver, counts)
    if problems:
        row.pop("events_per_s", None)  # not a rate of delivered events
        row["note"] = "; ".join(problems)
    return row


def check(destination: str, n: int, driver: dict[str, Any], counts: dict[str, Any]) -> list[str]:
    """Why the run's figures do not stand for ``n`` events delivered (empty: they do)."""
    out = []
    if driver.get("timeout"):
        out.append(f"driver killed after {LIMIT:.0f} s")
    if counts["seqs"] != n or counts["unique_ids"] != n:
        out.append(f"sink counted {counts['seqs']:,} calls, {counts['unique_ids']:,} ids of {n:,}")
    if counts["events"] != counts["unique_ids"]:
        out.append(f"{counts['events'] - counts['unique_ids']:,} duplicates")
    success = {str(r.status) for r in vendors.ROUTES[destination].values()}
    if destination == "stripe":
        success.add("200")  # the session
    other = {s: c for s, c in counts["statuses"].items() if s not in success}
    if other:
        out.append(f"answers other than success: {other}")
    stray = {p: c for p, c in counts["paths"].items() if p != vendors.STRIPE_SESSION}
    if stray:
        out.append(f"requests to no ingest path of {destination}: {stray}")
    if destination == "stripe" and not counts["paths"].get(vendors.STRIPE_SESSION):
        out.append("no session opened")
    sent = ((driver.get("info") or {}).get("stats") or {}).get("sent")
    if sent != n:
        out.append(f"the client counted {sent} sent of {n:,}")
    return out


def _drive(
    ctx: suite.Context, destination: str, batch: int | None, label: str, journal: Path, n: int
) -> dict[str, Any]:
    out = ctx.work / f"{label}.json"
    cmd = [sys.executable, str(HERE / "dest_drive.py"), "--destination", destination]
    cmd += ["--sink", ctx.sink_url, "--n", str(n), "--journal-dir", str(journal)]
    cmd += ["--out", str(out)]
    if batch is not None:
        cmd += ["--max-batch-events", str(batch)]
    if ctx.driver_cpu is not None:
        cmd += ["--cpu", str(ctx.driver_cpu)]
    with (ctx.logs / f"{label}.log").open("w") as log:
        try:
            code = subprocess.run(cmd, stdout=log, stderr=log, timeout=LIMIT).returncode
        except subprocess.TimeoutExpired:
            return {"timeout": True}
    if code != 0 or not out.exists():
        raise RuntimeError(f"{label}: driver exited with {code}; see {ctx.logs / label}.log")
    data: dict[str, Any] = json.loads(out.read_text())
    return data
