"""Small numeric helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

PERCENTILES = {"p50": 0.50, "p99": 0.99, "p99.9": 0.999}


def percentiles(samples: Sequence[int]) -> dict[str, int]:
    """Nearest-rank p50/p99/p99.9 and max of ``samples`` (ns); zeros when empty."""
    if not samples:
        return {name: 0 for name in (*PERCENTILES, "max")}
    ordered = sorted(samples)
    last = len(ordered) - 1
    out = {name: ordered[min(last, int(q * len(ordered)))] for name, q in PERCENTILES.items()}
    out["max"] = ordered[-1]
    return out


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None (None when there are none)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def vm_hwm_kib() -> int:
    """Peak resident set size of this process so far, in KiB (Linux ``VmHWM``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
