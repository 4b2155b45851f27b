"""The installed wheel holds the design card's folders under ``safeguards`` and nothing else: no
bootstrap (``dev.py``), build files, tests or benchmarks, no generic top-level name, and every
file a folder keeps beside its code (models, policy, migrations, personas) ships with it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = ("core", "actors", "adapters", "regions", "ops", "simulations")
NOT_SHIPPED_SUFFIXES = (".md",)  # documentation stays in the repository


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    # Built from a copy, so that setuptools' build folder never lands in the checkout.
    source = tmp_path_factory.mktemp("source")
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for top in TOP_LEVEL:
        shutil.copytree(ROOT / top, source / top,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--disable-pip-version-check", "-w", str(out), str(source)],
        check=True, capture_output=True)
    (path,) = out.glob("safeguards-*.whl")
    return zipfile.ZipFile(path)


@pytest.fixture(scope="module")
def wheel_names(wheel: zipfile.ZipFile) -> set[str]:
    return set(wheel.namelist())


def tracked_package_files() -> set[str]:
    listed = subprocess.run(["git", "ls-files", *TOP_LEVEL], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.split()
    return {f"safeguards/{name}" for name in listed if not name.endswith(NOT_SHIPPED_SUFFIXES)}


def test_only_the_folders_ship_under_the_namespace(wheel_names: set[str]) -> None:
    payload = {n for n in wheel_names if ".dist-info/" not in n}
    tops = {n.split("/")[1] for n in payload if n.startswith("safeguards/")}
    assert payload and all(n.startswith("safeguards/") for n in payload)
    assert tops == set(TOP_LEVEL)
    assert "safeguards/__init__.py" not in payload  # a namespace: nothing generic at its top
    for stray in ("dev.py", "setup.py", "pyproject.toml", "README.md"):
        assert f"safeguards/{stray}" not in payload
    assert not any("/tests/" in n or "/benchmarks/" in n for n in payload)


def test_every_tracked_file_of_a_folder_ships(wheel_names: set[str]) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    missing = tracked_package_files() - wheel_names
    assert missing == set()


def test_the_console_command_points_into_the_composition_root(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = (n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    text = wheel.read(entry_points).decode()
    assert "safeguards = safeguards.regions.command_line:main" in text
