"""meterline's requests pass a validating mock of Orb's real OpenAPI spec (Prism).

Prism (``@stoplight/prism-cli`` from the npm registry) loads Orb's spec and rejects any
request whose body or auth does not match it. The test installs it once into
``.venv/prism`` and skips, saying why, on a machine without Node.js and npm.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

import meterline
from meterline.testing import wait_until

ROOT = Path(__file__).resolve().parents[2]
PRISM_DIR = ROOT / ".venv" / "prism"
PRISM = PRISM_DIR / "node_modules" / ".bin" / "prism"
SPEC_CANDIDATES = [
    ROOT.parent / "shared" / "ingest-specs" / "orb-openapi.json",
    ROOT / "shared" / "ingest-specs" / "orb-openapi.json",
]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _spec() -> Path:
    for path in SPEC_CANDIDATES:
        if path.exists():
            return path
    pytest.skip("Orb's OpenAPI spec (shared/ingest-specs/orb-openapi.json) is not beside the repo")


def _install_prism() -> Path:
    if PRISM.exists():
        return PRISM
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are not installed; the Prism conformance test needs them")
    PRISM_DIR.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            "npm",
            "install",
            "--prefix",
            str(PRISM_DIR),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "@stoplight/prism-cli@5",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    if proc.returncode != 0 or not PRISM.exists():
        pytest.skip(f"could not install @stoplight/prism-cli from npm: {proc.stderr[-500:]}")
    return PRISM


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def prism_url():
    spec = _spec()
    prism = _install_prism()
    port = _free_port()
    proc = subprocess.Popen(
        [str(prism), "mock", "-h", "127.0.0.1", "-p", str(port), str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True
    )
    reader.start()
    try:
        wait_until(lambda: any("Prism is listening" in line for line in lines), timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        reader.join(timeout=5)
        proc.stdout.close()


def test_prism_rejects_a_body_that_breaks_the_spec(prism_url):
    """The mock is live: an event with an unknown key gets a 4xx, a valid one a 200."""
    event = {
        "idempotency_key": "k",
        "external_customer_id": "c",
        "event_name": "e",
        "timestamp": "2026-01-01T00:00:00.000000Z",
        "properties": {},
    }
    headers = {"Authorization": "Bearer test"}
    ok = httpx.post(f"{prism_url}/ingest", json={"events": [event]}, headers=headers)
    bad = httpx.post(
        f"{prism_url}/ingest", json={"events": [{**event, "extra": 1}]}, headers=headers
    )
    assert ok.status_code == 200
    assert 400 <= bad.status_code < 500


@pytest.mark.parametrize("options", [{}, {"customer_field": "customer_id"}, {"gzip": False}])
def test_meterline_ships_to_the_validating_mock_without_a_violation(prism_url, tmp_path, options):
    """Every batch meterline sends passes Prism's validation (accepted, nothing rejected);
    the mock's canned validation_failed entry names a key meterline never sent, and is
    ignored as it must be."""
    with meterline.Client(
        api_key="test", base_url=prism_url, journal_dir=tmp_path / "j", **options
    ) as client:
        for i in range(120):
            client.report(f"cust_{i % 3}", "api_call", {"tokens": i, "model": "small", "ok": True})
        result = client.flush(timeout=30)
        stats = client.stats()
    assert result.sent == 120
    assert result.rejected == 0
    assert stats["retried"] == 0
