"""The code stays readable at a glance: no module over 500 lines and no function over 60 lines
outside the tests, and a `__main__.py` of at most 60 lines that only wires the program."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE = ("mastodon_data", "lab", "policy")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def code_files() -> list[Path]:
    files = [ROOT / "__main__.py"]
    for folder in CODE:
        files += sorted((ROOT / folder).rglob("*.py"))
    return [f for f in files if "venv" not in f.parts]


def test_the_code_is_where_this_test_looks():
    names = {f.relative_to(ROOT).as_posix() for f in code_files()}
    assert {"__main__.py", "mastodon_data/plan.py", "policy/rules.py"} <= names
    assert any(name.startswith("mastodon_data/host/") for name in names)
    assert any(name.startswith("lab/standin/") for name in names)


def test_no_module_over_500_lines():
    long = {
        f.relative_to(ROOT).as_posix(): n
        for f in code_files()
        if (n := len(f.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_over_60_lines():
    long = {}
    for f in code_files():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{f.relative_to(ROOT).as_posix()}:{node.lineno} {node.name}"] = lines
    assert long == {}


def test_main_is_thin():
    assert len((ROOT / "__main__.py").read_text().splitlines()) <= 60
