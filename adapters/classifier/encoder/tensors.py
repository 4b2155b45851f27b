"""Read and write the safetensors format with numpy alone (no torch, no extra package).

A file is an 8-byte little-endian header length, a JSON header naming each tensor's dtype, shape
and byte range, then the raw little-endian data. Only the dtypes our weights use are accepted;
anything else is a typed error, never a guess.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from safeguards.adapters.classifier.errors import ModelLoadError

_DTYPES: dict[str, np.dtype[Any]] = {
    "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4")}
_NAMES = {v: k for k, v in _DTYPES.items()}
MAX_HEADER = 100 << 20


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor in a safetensors file, as float32 (floats) or its integer dtype."""
    data = path.read_bytes()
    if len(data) < 8:
        raise ModelLoadError(f"{path.name}: too short for a safetensors file")
    (size,) = struct.unpack("<Q", data[:8])
    if size > MAX_HEADER or 8 + size > len(data):
        raise ModelLoadError(f"{path.name}: safetensors header length {size} is out of range")
    try:
        header = json.loads(data[8 : 8 + size])
    except (ValueError, UnicodeDecodeError):
        raise ModelLoadError(f"{path.name}: safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path.name}: safetensors header is not an object")
    body = memoryview(data)[8 + size :]
    out: dict[str, np.ndarray] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[spec["dtype"]]
            shape = tuple(int(d) for d in spec["shape"])
            start, end = (int(x) for x in spec["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelLoadError(
                f"{path.name}: tensor {name[:80]!r} has an unusable entry") from None
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not 0 <= start <= end <= len(body) or end - start != count * dtype.itemsize:
            raise ModelLoadError(f"{path.name}: tensor {name[:80]!r} has a bad byte range")
        arr = np.frombuffer(body[start:end], dtype=dtype).reshape(shape)
        out[name] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr.copy()
    return out


def write_tensors(path: Path, tensors: Mapping[str, np.ndarray],
                  metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors in a stable order (sorted names), so equal inputs give equal bytes."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        if dtype not in _NAMES:
            raise ValueError(f"tensor {name!r}: dtype {arr.dtype} is not supported")
        raw = arr.astype(dtype).tobytes()
        header[name] = {"dtype": _NAMES[dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(chunks))
