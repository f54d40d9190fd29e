"""The house style's size rule, kept by a test: no function or method in mnistcli/ over 80 lines."""

import ast
from pathlib import Path

import mnistcli

MAX_LINES = 80


def test_no_function_is_longer_than_80_lines():
    package = Path(mnistcli.__file__).parent
    too_long = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = node.end_lineno - first + 1
                if lines > MAX_LINES:
                    where = f"{path.relative_to(package)}:{node.lineno}"
                    too_long.append(f"{where} {node.name} {lines}")
    assert too_long == []
