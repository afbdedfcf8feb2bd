"""One destination run in this (fresh) process: meterline speaking one vendor's API.

    .venv/bin/python benchmarks/dest_drive.py --destination lago \\
        --sink http://127.0.0.1:PORT --n 50000 --journal-dir DIR --out run.json

The steady scenario of ``drive.py`` (``n`` calls to ``report()`` in a tight loop, then
``flush()`` and ``close()``) with ``Client(destination=...)`` and its defaults, pointed at
the sink, which the caller has set to speak that vendor (``vendors.py``).
``--max-batch-events`` overrides the destination's batch limit (for Orb at 100 events, the
others' limit: it tells the cost of the batch size from the cost of the destination).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import drive
import peers
import vendors

DESTINATIONS = tuple(vendors.ROUTES)  # orb first: the others are compared with it
# what the destinations stage runs: name -> (destination, max_batch_events or its default)
ENTRIES: dict[str, tuple[str, int | None]] = {"orb": ("orb", None), "orb-100": ("orb", 100)}
ENTRIES |= {d: (d, None) for d in DESTINATIONS[1:]}


class MeterlineTo(peers.Meterline):
    """meterline with its defaults for ``destination`` and a journal in ``journal_dir``."""

    def __init__(
        self, destination: str, sink_url: str, journal_dir: str, batch: int | None = None
    ) -> None:
        import meterline

        self.client = meterline.Client(
            api_key="bench-key",
            destination=destination,
            base_url=sink_url + vendors.BASE_PATHS[destination],
            journal_dir=journal_dir,
            max_batch_events=batch,
        )
        self.send = self.client.report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--destination", choices=DESTINATIONS, required=True)
    parser.add_argument("--sink", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--max-batch-events", type=int, default=None)
    parser.add_argument("--journal-dir", required=True)
    parser.add_argument("--flush-timeout", type=float, default=30.0)
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to a CPU")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not args.sink.startswith("http://127.0.0.1:"):
        parser.error("the sink must be on 127.0.0.1")
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})

    floor = drive.timer_floor()
    t_start = time.monotonic()
    peer = MeterlineTo(args.destination, args.sink, args.journal_dir, args.max_batch_events)
    result = drive.steady(peer, args)
    result.update(peer=args.destination, scenario="destinations", floor_ns=floor)
    result.update(t_start=t_start, batch=peer.client.config.max_batch_events)
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
