"""Tree attention over mlx-lm's own layer modules (llama family, qwen2).

A draft *tree* is flattened into one sequence appended to the KV cache: node i sits at
cache slot `offset + i` but at *position* `positions[i]` (its depth below the last
verified token), and it may attend only to the cached prefix and to its own ancestors.
mlx-lm's attention takes positions from `cache.offset` (consecutive), so `tree_block`
re-runs one TransformerBlock with the same weights but explicit per-token RoPE positions
and an explicit boolean mask. After verification `compact` keeps the accepted path's
entries in every cache (gathered to the front of the tree region) and drops the rest.
"""
from __future__ import annotations

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
    tree's ancestor relation over the N new tokens."""
    n = tree.shape[0]
    m = np.concatenate([np.ones((n, prefix_len), dtype=bool), tree], axis=1)
    return mx.array(m)[None, None]


def _rope_at(rope, x: mx.array, positions: mx.array) -> mx.array:
    """RoPE of x (1, H, N, D) with token n at positions[n]: the tokens go into the batch
    axis, where mx.fast.rope takes one offset per example."""
    y = rope(x.transpose(2, 1, 0, 3), offset=positions)
    return y.transpose(2, 1, 0, 3)


def tree_block(block, x: mx.array, mask: mx.array, cache, positions: mx.array) -> mx.array:
    """One mlx-lm TransformerBlock (pre-norm attention + MLP) over x (1, N, d) with
    explicit positions and mask; the same weights and arithmetic as block(x, mask, cache)."""
    attn = block.self_attn
    B, L, _ = x.shape
    h = block.input_layernorm(x)
    q = attn.q_proj(h).reshape(B, L, attn.n_heads, -1).transpose(0, 2, 1, 3)
    k = attn.k_proj(h).reshape(B, L, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
    v = attn.v_proj(h).reshape(B, L, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
    q = _rope_at(attn.rope, q, positions)
    k = _rope_at(attn.rope, k, positions)
    k, v = cache.update_and_fetch(k, v)
    o = mx.fast.scaled_dot_product_attention(q, k, v, scale=attn.scale, mask=mask)
    h = x + attn.o_proj(o.transpose(0, 2, 1, 3).reshape(B, L, -1))
    return h + block.mlp(block.post_attention_layernorm(h))


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
