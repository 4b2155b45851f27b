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


def test_core_imports_nothing_impure() -> None:
    offenders = []
    for path in _modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names
                          if n.split(".")[0] in FORBIDDEN_MODULES]
    assert offenders == []


def test_core_reads_no_clock() -> None:
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in FORBIDDEN_CALLS):
                offenders.append(f"{path.name}:{node.lineno} .{node.func.attr}()")
    assert offenders == []


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    # The checks above would pass vacuously if they never parsed anything.
    assert len(_modules()) >= 8
    bad = ast.parse("import anyio\nfrom datetime import datetime\nx = datetime.now()")
    calls = [n for n in ast.walk(bad) if isinstance(n, ast.Call)]
    assert calls and isinstance(calls[0].func, ast.Attribute) and calls[0].func.attr == "now"
