"""The quickstart (what `make demo` runs) ends with a usage report equal to what was sent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quickstart_survives_the_outage_and_bills_exactly_what_was_sent():
    """A shortened demo run: server stopped halfway and restarted; the report matches."""
    env = {**os.environ, "DEMO_EVENTS": "6000"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "RESULT: the usage report equals what was sent" in proc.stdout
    assert "'dropped': 0" in proc.stdout
