"""Token windows: every token of every text is scored, however long the text.

A text is tokenised once without special tokens; its tokens are cut into windows of
``max_length`` minus the special tokens, each starting ``stride`` tokens after the previous one,
and each window gets the encoder's own special tokens back (``[CLS] ... [SEP]``, ``<s> ... </s>``).
Windows of similar length are run together (little padding), and a text's output is the
column-wise maximum over its windows: a harmful passage anywhere decides, as it would alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from safeguards.adapters.classifier.errors import ModelLoadError

RUN_BATCH = 64  # windows per session run


def tokenizer_from_json(data: bytes) -> Any:
    try:
        from tokenizers import Tokenizer  # type: ignore[import-not-found]
    except ImportError:
        raise ModelLoadError("encoder models need the 'tokenizers' package") from None
    try:
        tok = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as exc:  # the Rust side raises its own exception type
        raise ModelLoadError(f"encoder tokenizer unusable: {type(exc).__name__}") from None
    tok.no_padding()  # windows and padding are ours: a packaged padding setting would
    tok.no_truncation()  # pad every text to its own length, or silently cut it
    return tok


class TokenWindows:
    def __init__(self, tokenizer: Any, max_length: int, stride: int, prefix: str = "",
                 fine_length: int = 0) -> None:
        self.tokenizer = tokenizer
        specials = tokenizer.encode("").ids  # e.g. [CLS, SEP]: where the text's tokens go
        if not specials:
            raise ModelLoadError("encoder tokenizer adds no special tokens")
        # every window starts with the text the encoder expects first (e5: "query: ")
        lead = tokenizer.encode(prefix, add_special_tokens=False).ids if prefix else []
        self.prefix = list(specials[:1]) + list(lead)
        self.suffix = list(specials[1:])
        self.body = max_length - len(specials) - len(lead)
        if self.body < 1 or not 1 <= stride <= self.body:
            raise ModelLoadError("encoder window length and stride do not fit")
        self.stride = stride
        # A text longer than one window is also read in short windows: a harmful sentence
        # inside a long benign text is a small part of a full window (mean pooling dilutes it)
        # but most of a short one.
        self.fine_body = fine_length - len(specials) - len(lead) if fine_length else 0
        if fine_length and not 1 <= self.fine_body < self.body:
            raise ModelLoadError("encoder fine window length does not fit")

    def split(self, ids: Sequence[int]) -> list[list[int]]:
        """The windows of one text's tokens (special tokens added); at least one."""
        out = self._split(ids, self.body, self.stride)
        if self.fine_body and len(ids) > self.body:
            out += self._split(ids, self.fine_body, max(1, self.fine_body * 3 // 4))
        return out

    def _split(self, ids: Sequence[int], body: int, stride: int) -> list[list[int]]:
        starts = list(range(0, max(1, len(ids) - body + stride), stride))
        if starts[-1] + body < len(ids):
            starts.append(len(ids) - body)
        return [self.prefix + list(ids[s : s + body]) + self.suffix for s in starts]

    def windows(self, texts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
        """All windows of ``texts`` and, for each, the index of the text it came from."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        windows: list[list[int]] = []
        owners: list[int] = []
        for i, enc in enumerate(encodings):
            for window in self.split(enc.ids):
                windows.append(window)
                owners.append(i)
        return windows, owners

    def run(self, texts: Sequence[str],
            run: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
        """Each text's column-wise maximum of ``run`` over its windows."""
        windows, owners = self.windows(texts)
        order = sorted(range(len(windows)), key=lambda k: len(windows[k]))
        best: np.ndarray | None = None
        for chunk in runs_by_width(order, [len(w) for w in windows]):
            width = max(len(windows[k]) for k in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, k in enumerate(chunk):
                ids[row, : len(windows[k])] = windows[k]
                mask[row, : len(windows[k])] = 1
            out = run(ids, mask)
            if best is None:
                best = np.full((len(texts), out.shape[1]), -np.inf)
            idx = np.asarray([owners[k] for k in chunk])
            np.maximum.at(best, idx, out)
        assert best is not None
        return best


def runs_by_width(order: list[int], lengths: list[int]) -> list[list[int]]:
    """``order`` (shortest first) cut into session runs of at most RUN_BATCH windows, a new run
    started where a window is over twice the run's shortest (and 16 tokens longer): every
    window of a run is padded to its longest, so a prompt's short sentences are not run at the
    width of the prompt itself (a 100-token prompt and four 20-token sentences: 180 token slots
    in two runs, not 500 in one)."""
    runs: list[list[int]] = []
    for k in order:
        if runs and len(runs[-1]) < RUN_BATCH and lengths[k] <= max(
                2 * lengths[runs[-1][0]], lengths[runs[-1][0]] + 16):
            runs[-1].append(k)
        else:
            runs.append([k])
    return runs
