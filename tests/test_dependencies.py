"""The declared dependencies are what mnistcli imports, and a missing one is a one-line error."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
import typer

import mnistcli
from mnistcli.cli import PIP_NAMES, handles_errors

REPO = Path(__file__).resolve().parent.parent
PACKAGE = Path(mnistcli.__file__).parent


def imported_packages() -> set[str]:
    """Top-level names of every module mnistcli/ imports, at the top or inside functions."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("mnistcli",)}


def declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return {re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower() for spec in specs}


def test_every_package_mnistcli_imports_is_a_runtime_dependency():
    needed = {PIP_NAMES.get(name, name).lower() for name in imported_packages()}
    assert {"torch", "typer", "rich", "numpy", "pillow"} <= needed  # the scan sees imports
    assert needed - declared() == set(), "add these to [project] dependencies in pyproject.toml"


def test_torchvision_is_only_for_the_textbook_loop():
    """torchvision is declared where it is used: the textbook example and the benchmarks."""
    if "torchvision" in imported_packages():
        pytest.fail("mnistcli imports torchvision: move it back to [project] dependencies")
    assert "torchvision" not in declared()
    assert "torchvision" in declared("bench") and "torchvision" in declared("dev")
    assert "from torchvision" in (REPO / "examples" / "textbook_loop.py").read_text()


def test_a_missing_package_is_one_line_saying_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    monkeypatch.setitem(sys.modules, "PIL", None)

    @handles_errors
    def command(module: str) -> None:
        __import__(module)

    for module, package in (("onnxruntime", "onnxruntime"), ("PIL", "pillow")):
        with pytest.raises(typer.Exit) as exit:
            command(module)
        assert exit.value.exit_code == 2
        err = capsys.readouterr().err.strip()
        assert err == f"error: the package '{package}' is not installed; pip install {package}"
