"""A validating mock server (Prism) for any of the vendors' OpenAPI documents, on 127.0.0.1.

Prism (``@stoplight/prism-cli`` from the npm registry) loads a vendor's document and refuses
any request whose body or auth does not match it. ``prism_server("lago-openapi.yaml")``
installs Prism once into ``.venv/prism`` and starts it on a free port; a test module makes a
fixture of it. A machine without Node.js and npm, or without the documents beside the
repository, skips with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from meterline.testing import wait_until

ROOT = Path(__file__).resolve().parents[2]
PRISM_DIR = ROOT / ".venv" / "prism"
PRISM = PRISM_DIR / "node_modules" / ".bin" / "prism"
SPEC_DIRS = [ROOT.parent / "shared" / "ingest-specs", ROOT / "shared" / "ingest-specs"]
_install_lock = threading.Lock()


def spec_path(name: str) -> Path:
    """The vendor document ``name`` (e.g. ``"orb-openapi.json"``), or skip."""
    for directory in SPEC_DIRS:
        if (directory / name).exists():
            return directory / name
    pytest.skip(f"the vendor document {name} (shared/ingest-specs/) is not beside the repo")


def install_prism() -> Path:
    """Prism's executable, installed from npm on first use; skip when it cannot be."""
    with _install_lock:
        if PRISM.exists():
            return PRISM
        if shutil.which("node") is None or shutil.which("npm") is None:
            pytest.skip("Node.js and npm are not installed; the Prism tests need them")
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


@contextmanager
def prism_server(spec_name: str, *extra: str, timeout: float = 120) -> Iterator[str]:
    """Run ``prism mock`` on ``spec_name`` at 127.0.0.1; yield its base URL. ``extra``
    arguments go to Prism (``"--errors"`` makes it answer a violation with an error)."""
    spec = spec_path(spec_name)
    prism = install_prism()
    port = _free_port()
    proc = subprocess.Popen(
        [str(prism), "mock", "-h", "127.0.0.1", "-p", str(port), *extra, str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True)
    reader.start()
    try:
        try:
            wait_until(lambda: any("Prism is listening" in line for line in lines), timeout=timeout)
        except TimeoutError:
            raise AssertionError("Prism did not start:\n" + "".join(lines[-40:])) from None
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        reader.join(timeout=5)
        stdout.close()
