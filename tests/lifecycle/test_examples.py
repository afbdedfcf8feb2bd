"""examples/script.py against the reference server started as ``meterline serve``."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import httpx
import pytest

from tests.lifecycle.helpers import EXAMPLES, Proc, child_env

pytestmark = pytest.mark.slow


def test_script_example_delivers_to_the_reference_server(tmp_path: Path, procs):
    """`meterline serve --port 0` then examples/script.py, which returns without flushing:
    the server's usage report counts every event once."""
    serve = Proc(
        [
            sys.executable,
            "-m",
            "meterline.cli",
            "serve",
            "--port",
            "0",
            "--db",
            ":memory:",
            "--api-key",
            "dev-key",
        ],
        env=child_env(),
    )
    procs.append(serve)
    match = re.search(r"(http://127\.0\.0\.1:\d+/v1)", serve.expect("listening on"))
    assert match is not None
    url = match.group(1)
    script = Proc(
        [sys.executable, EXAMPLES / "script.py", "250"],
        env=child_env(
            METERLINE_API_KEY="dev-key",
            METERLINE_BASE_URL=url,
            METERLINE_JOURNAL_DIR=tmp_path / "j",
        ),
    )
    procs.append(script)
    assert script.wait() == 0, script.output()
    assert "reported 250 events" in script.lines
    usage = httpx.get(
        f"{url}/usage",
        params={"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"},
        headers={"Authorization": "Bearer dev-key"},
    ).json()["usage"]
    assert [(u["customer"], u["event_name"], u["count"]) for u in usage] == [
        ("cust_1", "rows_processed", 250)
    ]
    serve.signal(signal.SIGTERM)
    assert serve.wait() == 0, serve.output()
