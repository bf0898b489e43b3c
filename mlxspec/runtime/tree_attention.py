"""Tree attention over mlx-lm's own layer modules (the architectures of runtime.layered).

A draft *tree* is flattened into one sequence appended to the KV cache: node i sits at
cache slot `offset + i` but at *position* `positions[i]` (its depth below the last
verified token), and it may attend only to the cached prefix and to its own ancestors.
mlx-lm's attention takes positions from `cache.offset` (consecutive), so `tree_block`
calls the TransformerBlock itself with an explicit boolean mask while its attention's
`rope` is swapped for one that rotates each token to its own position (the block's own
code runs: q/k norms, scaling, soft-capping stay exactly mlx-lm's). After verification
`compact` keeps the accepted path's entries in every cache (gathered to the front of the
tree region) and drops the rest.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import mlx.core as mx
import numpy as np


def ancestor_matrix(parents: Sequence[int]) -> np.ndarray:
    """(N, N) bool, [i, j] = node j is node i or one of its ancestors. parents[i] < i,
    or -1 for a child of the tree's root (the root itself is not a node here)."""
    n = len(parents)
    m = np.zeros((n, n), dtype=bool)
    for i, p in enumerate(parents):
        if p >= i:
            raise ValueError("tree nodes must come after their parents")
        if p >= 0:
            m[i] = m[p]
        m[i, i] = True
    return m


def tree_mask(prefix_len: int, tree: np.ndarray) -> mx.array:
    """Boolean attention mask (1, 1, N, prefix_len + N): everything cached, plus the
    tree's ancestor relation over the N new tokens. Boolean (True = attend) suits every
    supported arch: mx.fast.scaled_dot_product_attention takes it, gemma2's own
    attention turns it into a finfo.min fill."""
    n = tree.shape[0]
    m = np.concatenate([np.ones((n, prefix_len), dtype=bool), tree], axis=1)
    return mx.array(m)[None, None]


def tree_inputs(start: int, parents: Sequence[int]) -> tuple[mx.array, mx.array]:
    """Positions and mask of a tree appended at cache slot `start`: the flattened
    sequence is the root (the last verified token) and then node i, a child of
    parents[i] (-1: of the root)."""
    anc = ancestor_matrix([-1] + [int(p) + 1 for p in parents])
    return mx.array(start + anc.sum(axis=1) - 1, dtype=mx.int32), tree_mask(start, anc)


def _rope_at(rope, x: mx.array, positions: mx.array) -> mx.array:
    """RoPE of x (B, H, N, D) with token n at positions[n]: the tokens go into the batch
    axis, where mx.fast.rope takes one offset per example."""
    B, H, N, D = x.shape
    y = rope(x.transpose(0, 2, 1, 3).reshape(B * N, H, 1, D), offset=mx.tile(positions, B))
    return y.reshape(B, N, H, D).transpose(0, 2, 1, 3)


class _RopeAt:
    """Stands in for an attention module's `rope` during one call: whatever offset the
    module passes (its cache's), token n is rotated to positions[n]."""

    def __init__(self, rope, positions: mx.array):
        self.rope, self.positions = rope, positions

    def __call__(self, x, offset=0, **kw):
        return _rope_at(lambda a, offset: self.rope(a, offset=offset, **kw), x, self.positions)


@contextmanager
def rope_positions(attn, positions: mx.array):
    """Make `attn` (an mlx-lm Attention module) apply RoPE at explicit positions. The
    stand-in goes in the instance __dict__, which attribute lookup reads before the
    module's parameter dict, so the module's parameters are never touched."""
    own = attn.__dict__
    had, old = "rope" in own, own.get("rope")
    own["rope"] = _RopeAt(getattr(attn, "rope"), positions)
    try:
        yield
    finally:
        if had:
            own["rope"] = old
        else:
            del own["rope"]


def tree_block(block, x: mx.array, mask: mx.array, cache, positions: mx.array) -> mx.array:
    """One mlx-lm TransformerBlock over x (1, N, d) with explicit per-token positions
    and an explicit (boolean) mask: the block's own __call__ (its norms, q/k norms,
    scaling, soft-capping), only RoPE is moved to `positions`."""
    positions = mx.array(positions).astype(mx.int32)
    with rope_positions(block.self_attn, positions):
        return block(x, mask, cache)


def compact(cache, start: int, keep: Sequence[int]) -> None:
    """Keep the cache entries at slots start + keep[j] (ascending), moved to start + j;
    drop everything after. `cache` is an mlx-lm KVCache."""
    keep = [int(i) for i in keep]
    n = len(keep)
    if keep != list(range(n)):
        idx = mx.array([start + i for i in keep], dtype=mx.int32)
        for name in ("keys", "values"):
            a = getattr(cache, name)
            a[..., start : start + n, :] = mx.take(a, idx, axis=2)
    cache.offset = start + n
