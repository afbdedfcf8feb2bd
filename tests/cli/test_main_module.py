"""`python -m meterline` is the `meterline` command."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meterline", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_python_m_meterline_prints_the_command_help():
    """`python -m meterline --help` exits 0 and lists the subcommands under the `meterline` name."""
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: meterline ")
    assert "serve" in result.stdout
    assert "journal" in result.stdout


def test_python_m_meterline_runs_a_subcommand():
    """`python -m meterline journal status --help` reaches the journal status subcommand."""
    result = _run("journal", "status", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: meterline journal status")


def test_python_m_meterline_without_a_command_fails_like_the_command():
    """`python -m meterline` with no subcommand exits 2 with argparse's usage error."""
    result = _run()
    assert result.returncode == 2
    assert "required: COMMAND" in result.stderr
