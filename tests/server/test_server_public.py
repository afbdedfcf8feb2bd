"""The public surface of meterline.server, and its standard-library-only promise."""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import meterline.server
from meterline import cli

SERVER_DIR = Path(meterline.server.__file__).parent


def test_all_is_the_sorted_public_surface() -> None:
    """__all__ lists exactly the public names, sorted."""
    assert meterline.server.__all__ == [
        "DEFAULT_GRACE_PERIOD",
        "DEFAULT_MAX_BODY_BYTES",
        "READY_LINE",
        "ReferenceServer",
        "RequestRecord",
        "parse_duration",
        "serve",
    ]
    public = {n for n in vars(meterline.server) if not n.startswith("_")}
    assert public - {"annotations"} == set(meterline.server.__all__)


def test_the_server_imports_only_the_standard_library() -> None:
    """Every module of meterline.server imports the standard library or itself, nothing else."""
    allowed = set(sys.stdlib_module_names) | {"meterline"}
    for path in SERVER_DIR.glob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
                if name.startswith("meterline."):
                    assert name.startswith("meterline.server") or path.name == "__main__.py"


def test_reference_server_signature() -> None:
    """ReferenceServer's constructor keeps the documented parameters and defaults."""
    parameters = inspect.signature(meterline.server.ReferenceServer).parameters
    defaults = {name: p.default for name, p in parameters.items()}
    assert defaults["host"] == "127.0.0.1"
    assert defaults["port"] == 0
    assert defaults["db"] == ":memory:"
    assert defaults["api_keys"] == ()
    assert defaults["grace_period"] == 43200.0
    assert defaults["max_body_bytes"] == 5 * 1024 * 1024


def test_the_cli_has_a_serve_subcommand_with_its_options() -> None:
    """`meterline serve` is registered with the documented options and defaults."""
    args = cli.build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.db) == ("127.0.0.1", 8787, "meterline-usage.db")
    assert (args.api_keys, args.grace_period, args.verbose) == ([], 43200.0, False)
    keys = cli.build_parser().parse_args(["serve", "--api-key", "a", "--api-key", "b"]).api_keys
    assert keys == ["a", "b"]
