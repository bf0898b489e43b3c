"""Reply store: guesses retrieved from the target's own earlier replies (REST-style).

Chat replies reuse phrasing across conversations ("Here's a Python function that",
"```python\\ndef ", "Args:\\n        n (int):"). The store is an n-gram index over
token sequences the target generated itself (self-distillation replies); the last
n tokens of the context are looked up (longest n first) and the continuation that most
often followed them is the guess. Guesses only enter the draft tree: verification keeps
output exact whatever they are.

Index: per n-gram size, sorted 64-bit hashes of every n-gram with the start of its most
frequent continuation, so a lookup is a binary search (no per-token Python objects).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mlxspec.drafters.base import Drafter
from mlxspec.tree import DraftTree

# No bigram fallback: a 2-token match among ~100k reply tokens predicts little, yet it
# fires on nearly every round and its tokens take verification slots from the head's
# own guesses (modelled 1.77 against 1.73 tok/s with it, docs/head.md).
DEFAULT_NGRAMS = (4, 3)
SPAN = 8  # continuation tokens compared when counting which continuation is most frequent
SEP = -1  # separates replies in the token array
STORE_FILE = "reply-store.safetensors"
DEFAULT_STORE_LEN = 6  # retrieved tokens verified per round
_PRIME = np.uint64(1_000_003)


def _hash_rows(rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of token ids (wrapping arithmetic)."""
    h = np.zeros(rows.shape[0], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(rows.shape[1]):
            h = h * _PRIME + (rows[:, j] + 2).astype(np.uint64)
    return h


class ReplyStore:
    def __init__(self, tokens: np.ndarray, ngrams: Sequence[int] = DEFAULT_NGRAMS, span: int = SPAN):
        self.tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        self.ngrams = tuple(sorted({int(n) for n in ngrams}, reverse=True))
        if not self.ngrams or self.ngrams[-1] < 1:
            raise ValueError("n-gram sizes must be positive")
        self.span = int(span)
        self._index = {n: self._build(n) for n in self.ngrams}

    @property
    def num_tokens(self) -> int:
        return int((self.tokens >= 0).sum())

    @property
    def nbytes(self) -> int:
        return self.tokens.nbytes + sum(a.nbytes for idx in self._index.values() for a in idx)

    def _build(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sorted n-gram hashes, start of the most frequent continuation, its count)."""
        t = self.tokens
        empty = (np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int64))
        if t.size <= n:
            return empty
        grams = sliding_window_view(t, n)[:-1]  # grams[i] = t[i : i + n], continued at i + n
        start = np.arange(n, t.size)
        ok = (grams >= 0).all(axis=1) & (t[n:] >= 0)
        if not ok.any():
            return empty
        grams, start = grams[ok], start[ok]
        keys = _hash_rows(grams)
        padded = np.concatenate([t, np.full(self.span, SEP, dtype=t.dtype)])
        cont = sliding_window_view(padded, self.span)[start]
        cont = np.where(np.cumsum(cont < 0, axis=1) > 0, SEP, cont)  # cut at the reply's end
        conts = _hash_rows(cont)
        order = np.lexsort((conts, keys))
        keys, conts, start = keys[order], conts[order], start[order]
        # runs of equal (n-gram, continuation): count them, keep the first occurrence
        new_run = np.ones(keys.size, dtype=bool)
        new_run[1:] = (keys[1:] != keys[:-1]) | (conts[1:] != conts[:-1])
        run_at = np.nonzero(new_run)[0]
        counts = np.diff(np.append(run_at, keys.size))
        run_keys, run_start = keys[run_at], start[run_at]
        # per n-gram, the run with the highest count
        best = np.lexsort((-counts, run_keys))
        first = np.ones(best.size, dtype=bool)
        first[1:] = run_keys[best][1:] != run_keys[best][:-1]
        best = best[first]
        return run_keys[best], run_start[best], counts[best]

    def propose(self, context: Sequence[int], max_len: int) -> list[int]:
        """The most frequent continuation of the longest n-gram that ends the context
        (empty when none is in the store)."""
        if max_len <= 0:
            return []
        for n in self.ngrams:
            if len(context) < n:
                continue
            keys, starts, _ = self._index[n]
            if keys.size == 0:
                continue
            h = _hash_rows(np.asarray(context[-n:], dtype=np.int64)[None])[0]
            j = int(np.searchsorted(keys, h))
            if j < keys.size and keys[j] == h:
                s = int(starts[j])
                out = self.tokens[s : s + max_len]
                end = np.nonzero(out < 0)[0]
                return [int(x) for x in (out[: end[0]] if end.size else out)]
        return []


class StoreDrafter(Drafter):
    """The reply store as a branch source (compose.py): its continuation of the context."""

    name = "store"

    def __init__(self, store: ReplyStore, max_len: int = DEFAULT_STORE_LEN):
        self.store, self.max_len = store, max_len
        self._seq: list[int] = []

    def reset(self, tokens, runner=None) -> None:
        self._seq = [int(t) for t in tokens]

    def extend(self, tokens) -> None:
        self._seq.extend(int(t) for t in tokens)

    def propose(self, k, params=None, rng=None, max_nodes=None) -> DraftTree:
        return DraftTree.chain(self.store.propose(self._seq, self.max_len), guessed=0)

    def memory_bytes(self) -> int:
        return self.store.nbytes


def replies_from_rows(rows: np.ndarray, prompt_len: np.ndarray, lead: int = 4) -> np.ndarray:
    """One token array of replies, SEP between them, from selfgen rows (tokens (N, T),
    -1 after each row's end). Each reply keeps the last `lead` prompt tokens (the chat
    template's assistant header), so a reply's first tokens can be looked up too."""
    parts = []
    for row, p in zip(np.asarray(rows), np.asarray(prompt_len)):
        valid = row[row >= 0]
        parts.append(valid[max(0, int(p) - lead):])
        parts.append(np.array([SEP]))
    return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)


def save_store(path: Path, tokens: np.ndarray, vocab_size: int, source: str) -> None:
    """Written atomically: a kill leaves the old store or the new one, never a torn one."""
    import mlx.core as mx

    from mlxspec.atomic import atomic_write_with

    arrays = {"tokens": mx.array(np.asarray(tokens, dtype=np.int32))}
    meta = {"vocab_size": str(int(vocab_size)), "source": source}
    atomic_write_with(Path(path), lambda tmp: mx.save_safetensors(tmp, arrays, metadata=meta),
                      suffix=".safetensors")


def load_store(path: Path, vocab_size: int) -> ReplyStore:
    """Read a store file; ValueError (with a one-line reason) if it is unusable."""
    import mlx.core as mx

    try:
        data, meta = mx.load(str(path), return_metadata=True)
        tokens = np.array(data["tokens"]).astype(np.int64).reshape(-1)
    except Exception as exc:  # any unreadable file: the drafter goes on without it
        raise ValueError(f"reply store {Path(path).name} is unreadable ({type(exc).__name__})") from None
    if int(meta.get("vocab_size", -1)) != int(vocab_size) or (tokens.size and tokens.max() >= vocab_size):
        raise ValueError(f"reply store {Path(path).name} was built for another vocabulary")
    if tokens.size and tokens.min() < SEP:
        raise ValueError(f"reply store {Path(path).name} is corrupt (negative token ids)")
    return ReplyStore(tokens)


def find_store(model_dir: Path) -> Optional[Path]:
    p = Path(model_dir) / STORE_FILE
    return p if p.is_file() else None
