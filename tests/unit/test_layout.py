"""The package layout stays as documented: short modules, every module in the import layers,
and destinations that touch no files.

The import rules themselves (which module may import which) are import-linter contracts in
pyproject.toml, checked by ``make lint``; these tests cover what import-linter cannot see.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

import pytest

import meterline

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - mypy brings tomli on 3.10
    import tomli as tomllib

PACKAGE = Path(meterline.__file__).parent
PYPROJECT = PACKAGE.parent.parent / "pyproject.toml"
LINE_BUDGET = 300
# A module over the budget says why at the top of its docstring, in a paragraph starting so.
LONG_MARKER = "Why this module is long:"
# Packages with their own rules instead of a place in the layers: the reference server is
# kept apart from the client by its own contracts.
OUTSIDE_LAYERS = {"__init__", "server"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_a_module_is_short_or_says_why_it_is_long(path: Path) -> None:
    """A module over 300 lines has a docstring paragraph starting "Why this module is long:"."""
    source = path.read_text(encoding="utf-8")
    lines = source.count("\n")
    if lines <= LINE_BUDGET:
        return
    docstring = ast.get_docstring(ast.parse(source)) or ""
    paragraphs = [p.strip() for p in docstring.split("\n\n")]
    assert any(p.startswith(LONG_MARKER) for p in paragraphs), (
        f"{_name(path)} has {lines} lines (budget {LINE_BUDGET}): split it along its jobs, "
        f"or start a paragraph of its docstring with {LONG_MARKER!r} and say why"
    )


def _contracts() -> list[dict[str, Any]]:
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    contracts: list[dict[str, Any]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _top_level() -> set[str]:
    return {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.is_file()) or (p / "__init__.py").is_file()
    }


def _layer_names() -> set[str]:
    contracts = _contracts()
    [top] = [c for c in contracts if c["type"] == "layers" and c["containers"] == ["meterline"]]
    names: set[str] = set()
    for layer in top["layers"]:
        names.update(part.strip() for part in layer.replace(":", "|").split("|"))
    return names


def test_every_top_level_module_has_a_place_in_the_layers() -> None:
    """A new module or package directly under meterline/ is named in the layers contract,
    so import-linter checks its imports instead of silently leaving it out."""
    missing = _top_level() - _layer_names() - OUTSIDE_LAYERS
    assert not missing, f"add {sorted(missing)} to [tool.importlinter] layers in pyproject.toml"


def test_the_server_contracts_name_every_core_module() -> None:
    """Both contracts that keep the reference server and the client apart list every module
    of the client, so a new module cannot import the server or be imported by it unseen."""
    core = {
        f"meterline.{name}" for name in _top_level() - {"__init__", "__main__", "cli", "server"}
    }
    forbidden = [c for c in _contracts() if c["type"] == "forbidden"]
    [no_server] = [c for c in forbidden if c["forbidden_modules"] == ["meterline.server"]]
    [no_client] = [c for c in forbidden if c["source_modules"] == ["meterline.server"]]
    assert not core - set(no_server["source_modules"]), "add them to source_modules"
    assert not core - set(no_client["forbidden_modules"]), "add them to forbidden_modules"


# What a destination may not call: files need no import (`open`), and a dynamic import
# would hide a module from import-linter.
FORBIDDEN_CALLS = {"open", "__import__", "import_module", "exec", "eval"}


@pytest.mark.parametrize("path", sorted((PACKAGE / "destinations").glob("*.py")), ids=_name)
def test_a_destination_opens_no_file_and_imports_nothing_dynamically(path: Path) -> None:
    """A destination knows wire formats: it calls no open(), no __import__/import_module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in FORBIDDEN_CALLS:
                found.append(f"line {node.lineno}: {name}()")
    assert not found, f"{_name(path)}: {found}"
