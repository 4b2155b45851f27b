"""core/ stays pure: no I/O libraries, no clock, no randomness."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"
FORBIDDEN_MODULES = {"anyio", "asyncio", "nats", "sqlalchemy", "asyncpg", "onnxruntime", "random",
                     "secrets", "uuid", "socket", "time", "os", "subprocess", "httpx", "grpc"}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "perf_counter", "monotonic", "urandom"}


def _modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def impure_imports(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [n for n in names if n.split(".")[0] in FORBIDDEN_MODULES]


def clock_calls(tree: ast.AST) -> list[str]:
    return [f"{node.lineno} .{node.func.attr}()" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in FORBIDDEN_CALLS]


def test_core_imports_nothing_impure() -> None:
    offenders = [f"{path.name}: {name}" for path in _modules()
                 for name in impure_imports(ast.parse(path.read_text(), filename=str(path)))]
    assert offenders == []


def test_core_reads_no_clock() -> None:
    offenders = [f"{path.name}:{call}" for path in _modules()
                 for call in clock_calls(ast.parse(path.read_text()))]
    assert offenders == []


def test_the_checks_see_a_violation() -> None:
    # The checks above would pass vacuously if they never parsed anything, or saw nothing.
    assert len(_modules()) >= 8
    bad = ast.parse("import anyio\nfrom time import monotonic\nfrom datetime import datetime\n"
                    "x = datetime.now()\ny = os.urandom(4)")
    assert impure_imports(bad) == ["anyio", "time"]
    assert clock_calls(bad) == ["4 .now()", "5 .urandom()"]
