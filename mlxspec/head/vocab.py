"""The draft head's vocabulary: a frequency-ranked core plus a dynamic long tail.

Core (FR-Spec): the N most frequent tokens of the training corpus, EOS always in. Fixed
for a session; its LM-head rows are gathered once.

Tail (EvoSpec-style): up to `tail_capacity` tokens outside the core, retrieved for the
current context: every token of the prompt and conversation, tokens just emitted, and a
few embedding-space neighbours of each (an LSH index over the target's embedding rows).
Least-recently-seen tail tokens are evicted. Each observed token costs O(neighbours)
Python work, never a pass over the full vocabulary.

Index mapping both ways:
    sub_to_full[j]  full-vocab id of draft slot j (core slots first, then tail slots)
    full_to_sub[t]  draft slot of token t, or -1 when t is outside the subset
Empty tail slots map to -1 in sub_to_full and are masked out of the draft logits.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Optional, Sequence

import numpy as np

MODES = ("full", "static", "dynamic")


class NeighbourIndex:
    """Approximate nearest neighbours (cosine) of token embeddings: random-hyperplane LSH
    buckets, refined by exact cosine inside the bucket. Built once from the (V, d)
    embedding matrix with (V, d) x (d, bits) matmuls over row chunks; queries are
    memoised. `weight`: an mx.array, or anything with .shape and [ids] -> float rows
    (LayeredModel.lm_head_view(): a quantized head dequantized a chunk at a time)."""

    def __init__(self, weight, num_neighbours: int = 4, bits: Optional[int] = None,
                 seed: int = 0, exclude: Optional[np.ndarray] = None):
        import mlx.core as mx

        V, d = int(weight.shape[0]), int(weight.shape[1])
        if bits is None:  # about 8 tokens per bucket
            bits = int(max(4, min(20, np.ceil(np.log2(max(V, 16) / 8)))))
        self.bits = bits
        self.k = num_neighbours
        self.weight = weight  # mx.array, kept by reference (it is the target's)
        proj = mx.array(np.random.default_rng(seed).standard_normal((d, bits)).astype(np.float32))
        chunk = 16384
        signs = np.concatenate([
            np.array((weight[mx.arange(a, min(V, a + chunk))].astype(mx.float32) @ proj) > 0)
            for a in range(0, V, chunk)])
        codes = (signs.astype(np.int64) << np.arange(bits, dtype=np.int64)).sum(axis=1)
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        bounds = np.searchsorted(sorted_codes, np.arange((1 << bits) + 1))
        self._codes = codes
        self._order = order.astype(np.int32)
        self._bounds = bounds
        self._exclude = exclude  # boolean (V,) mask of tokens never returned (the core)
        self._memo: dict[int, tuple] = {}

    def bucket(self, token: int) -> np.ndarray:
        c = self._codes[token]
        return self._order[self._bounds[c] : self._bounds[c + 1]]

    def neighbours(self, token: int) -> tuple:
        hit = self._memo.get(token)
        if hit is not None:
            return hit
        import mlx.core as mx

        cand = self.bucket(token)
        cand = cand[cand != token]
        if self._exclude is not None:
            cand = cand[~self._exclude[cand]]
        if cand.shape[0] > self.k:
            w = self.weight
            rows = np.array(w[mx.array(cand)].astype(mx.float32))
            q = np.array(w[token].astype(mx.float32))
            sims = rows @ q / (np.linalg.norm(rows, axis=1) * np.linalg.norm(q) + 1e-9)
            cand = cand[np.argsort(-sims, kind="stable")[: self.k]]
        out = tuple(int(t) for t in cand)
        self._memo[token] = out
        return out


class DraftVocab:
    def __init__(
        self,
        vocab_size: int,
        core_ids: Sequence[int],
        mode: str = "dynamic",
        tail_capacity: int = 1024,
        neighbours: Optional[NeighbourIndex] = None,
        recent_neighbours: bool = True,
    ):
        if mode not in MODES:
            raise ValueError(f"vocab mode must be one of {MODES}, got {mode!r}")
        self.vocab_size = int(vocab_size)
        self.mode = mode
        if mode == "full":
            core = np.arange(self.vocab_size, dtype=np.int32)
            tail_capacity = 0
        else:
            core = np.asarray(list(dict.fromkeys(int(t) for t in core_ids)), dtype=np.int32)
            if core.size and (core.min() < 0 or core.max() >= self.vocab_size):
                raise ValueError("core vocabulary ids out of range")
        if mode == "static":
            tail_capacity = 0
        self.core = core
        self.num_core = int(core.shape[0])
        self.tail_capacity = int(tail_capacity)
        self.neighbours = neighbours if mode == "dynamic" else None
        self.recent_neighbours = recent_neighbours
        self.full_to_sub = np.full(self.vocab_size, -1, dtype=np.int32)
        self.full_to_sub[core] = np.arange(self.num_core, dtype=np.int32)
        self.sub_to_full = np.concatenate(
            [core, np.full(self.tail_capacity, -1, dtype=np.int32)]
        )
        self.in_core = np.zeros(self.vocab_size, dtype=bool)
        self.in_core[core] = True
        self._lru: "OrderedDict[int, int]" = OrderedDict()  # tail token -> slot
        self._free = list(range(self.num_core + self.tail_capacity - 1, self.num_core - 1, -1))
        self.version = 0  # bumped when the tail changes (the head regathers its rows)

    # -- queries ----------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Slots in use (core + occupied tail)."""
        return self.num_core + len(self._lru)

    @property
    def capacity(self) -> int:
        return self.num_core + self.tail_capacity

    def contains(self, token: int) -> bool:
        return 0 <= token < self.vocab_size and self.full_to_sub[token] >= 0

    def ids(self) -> np.ndarray:
        """Full-vocab ids of the subset in use (core first)."""
        return self.sub_to_full[self.sub_to_full >= 0]

    def tail_ids(self) -> np.ndarray:
        """(tail_capacity,) ids per tail slot, -1 where empty."""
        return self.sub_to_full[self.num_core :]

    def to_full(self, sub: np.ndarray) -> np.ndarray:
        return self.sub_to_full[np.asarray(sub)]

    def to_sub(self, full: np.ndarray) -> np.ndarray:
        return self.full_to_sub[np.asarray(full)]

    # -- updates ----------------------------------------------------------------------
    def _touch(self, token: int) -> None:
        if token < 0 or token >= self.vocab_size or self.in_core[token]:
            return
        slot = self._lru.get(token)
        if slot is not None:
            self._lru.move_to_end(token)
            return
        if not self._free:
            old, slot = self._lru.popitem(last=False)
            self.full_to_sub[old] = -1
        else:
            slot = self._free.pop()
        self._lru[token] = slot
        self.sub_to_full[slot] = token
        self.full_to_sub[token] = slot
        self.version += 1

    def observe(self, tokens: Iterable[int], with_neighbours: bool = True) -> None:
        """Context tokens (prompt, emitted text) join the tail, with their neighbours.
        The token itself is touched last so it outlives its neighbours in the LRU."""
        if self.tail_capacity == 0:
            return
        for t in tokens:
            t = int(t)
            if with_neighbours and self.neighbours is not None and 0 <= t < self.vocab_size:
                for nb in self.neighbours.neighbours(t):
                    self._touch(nb)
            self._touch(t)

    def reset(self, context: Sequence[int] = ()) -> None:
        for tok in list(self._lru):
            self.full_to_sub[tok] = -1
        self._lru.clear()
        self.sub_to_full[self.num_core :] = -1
        self._free = list(range(self.num_core + self.tail_capacity - 1, self.num_core - 1, -1))
        self.version += 1
        self.observe(context)


def rank_core(counts: np.ndarray, size: int, always: Iterable[int] = ()) -> np.ndarray:
    """The `size` most frequent token ids (ties by id), with `always` (EOS...) forced in."""
    counts = np.asarray(counts)
    order = np.lexsort((np.arange(counts.shape[0]), -counts))
    always = [int(t) for t in always if 0 <= int(t) < counts.shape[0]]
    keep = list(dict.fromkeys(always))
    seen = set(keep)
    for t in order:
        if len(keep) >= size:
            break
        t = int(t)
        if t not in seen:
            keep.append(t)
            seen.add(t)
    return np.asarray(keep, dtype=np.int32)
