"""verify.py's rule with the target's logits on the device: only token ids and the few
probabilities the rejection rule compares cross to the host, O(nodes) bytes a round,
not O(nodes x vocabulary).

Greedy: the target's token of every row (its own penalty window: the context and the
node's path) in one argmax; the walk runs on the host over those ids.

Sampling: everything the walk can need is computed on the device in one graph, read in
one sync, and the walk decides on the host with its own uniform numbers:
  - r(x) for every node x: the target's distribution at its parent after the residuals
    of its earlier siblings (rejecting sibling s turns r into norm(max(0, r - q_s)); a
    copied token is the point mass, a one-hot q);
  - q(x) for every node (1 for a copied token);
  - one draw per row from that row's final residual (every child rejected; a row with
    no children: p itself), with a device key drawn from the call's generator.
Where the walk ends at a row, that row's draw is the next token. The draws do not
depend on the walk's outcome, so computing all of them up front changes nothing.
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx
import numpy as np

import mlxspec.verify as verify_mod
from mlxspec.device_sampling import draw, greedy_ids, has_penalty, key_from, probs_rows
from mlxspec.runtime.host import to_host
from mlxspec.sampling import SamplingParams
from mlxspec.tree import DraftTree


def row_contexts(tree: DraftTree, context: list[int], params: SamplingParams) -> list[list[int]]:
    """Each row's penalty window: row 0 the context's tail, row i + 1 node i's path after
    it (only the last repetition_context_size tokens matter)."""
    size = params.repetition_context_size
    rows = [list(context[-size:])]
    for tok, parent in zip(tree.tokens, tree.parents):
        rows.append((rows[parent + 1] + [int(tok)])[-size:])
    return rows


def verify(logits: mx.array, tree: DraftTree, context: list[int], params: SamplingParams,
           rng: Optional[np.random.Generator] = None, relax=None) -> tuple[list[int], int]:
    """verify.verify's contract for (1 + N, V) logits on the device. `relax`: the hooks
    of relaxed verification (relaxed_device.DeviceBlend): rows against p_ens."""
    ctx = row_contexts(tree, context, params) if has_penalty(params) else None
    if params.greedy:
        best, aux = greedy_ids(logits, ctx, params), []
        if relax is not None:
            best, aux = relax.greedy(logits, ctx, params, best, tree)
        best, *aux = _tuple(to_host(best, *aux))
        path, nxt = verify_mod._verify_greedy(best, tree, context, params, lambda row, text, at: int(row))
    else:
        if rng is None:
            raise ValueError("sampling verification needs a random generator")
        key = key_from(rng)
        P, ok = probs_rows(logits, ctx, params)
        r_x, q_x, draws, ok, aux = _read(P, ok, tree, key, relax)
        if ok is not None and not ok.all():  # top-p needed more than its candidates: exactly
            P, _ = probs_rows(logits, ctx, params, full_sort=True)
            r_x, q_x, draws, _, aux = _read(P, None, tree, key, relax)
        path, nxt = walk(tree, r_x, q_x, draws, rng)
    if relax is not None:
        relax.count([0] + [c + 1 for c in path], aux)
    return path, nxt


def _tuple(x) -> tuple:
    return x if isinstance(x, tuple) else (x,)


def residual_rows(r: mx.array, q: mx.array) -> mx.array:
    """norm(max(0, r - q)) per row (q one-hot for a copied token: r without it); a row
    whose difference sums to zero keeps r (r == q: rejection has probability zero)."""
    out = mx.where(q >= 1.0, 0.0, mx.maximum(r - q, 0.0))
    total = mx.sum(out, axis=-1, keepdims=True)
    return mx.where(total > 0, out / mx.maximum(total, 1e-30), r)


def _q_rows(tree: DraftTree, V: int) -> mx.array:
    """(N, V): each node's proposal row, one-hot for a copied token."""
    rows = []
    for x, q in zip(tree.tokens, tree.q):
        if q is None:
            rows.append((mx.arange(V) == int(x)).astype(mx.float32))
        else:
            rows.append((q if isinstance(q, mx.array) else mx.array(np.asarray(q))).astype(mx.float32).reshape(V))
    return mx.stack(rows)


def _read(P: mx.array, ok, tree: DraftTree, key: mx.array, relax=None):
    """(r(x), q(x) per node, one draw per row, top-p flags, relax's numbers) read in one sync."""
    aux = []
    if relax is not None:
        P, aux = relax.sampling(P, tree)
    V = P.shape[-1]
    x = mx.array(np.asarray(tree.tokens, dtype=np.int32))
    Q = _q_rows(tree, V)
    ranks: dict[int, list[tuple[int, int]]] = {}  # sibling rank -> [(row, node)]
    seen: dict[int, int] = {}
    for c, p in enumerate(tree.parents):
        rank = seen.get(p, 0)
        seen[p] = rank + 1
        ranks.setdefault(rank, []).append((p + 1, c))
    R = P * 1.0  # a new array: the residual rows are written into it, not into P
    vals, order = [], []
    for rank in sorted(ranks):
        rows = mx.array([r for r, _ in ranks[rank]])
        nodes = [c for _, c in ranks[rank]]
        cur = R[rows]
        idx = mx.array(nodes)
        vals.append(mx.take_along_axis(cur, x[idx][:, None], axis=1)[:, 0])
        R[rows] = residual_rows(cur, Q[idx])
        order += nodes
    q_x = mx.take_along_axis(Q, x[:, None], axis=1)[:, 0]
    flags = [ok] if ok is not None else []
    out = to_host(mx.concatenate(vals), q_x, draw(R, key), *flags, *aux)
    r_x = np.empty(len(order), dtype=np.float64)
    r_x[np.asarray(order)] = out[0]
    return (r_x, out[1].astype(np.float64), [int(t) for t in out[2]], (out[3] if flags else None),
            list(out[3 + len(flags):]))


def walk(tree: DraftTree, r_x, q_x, draws, rng: np.random.Generator) -> tuple[list[int], int]:
    """The rejection walk of verify._verify_sampling over the read numbers."""
    kids: dict[int, list[int]] = {}
    for i, p in enumerate(tree.parents):
        kids.setdefault(int(p), []).append(i)
    path: list[int] = []
    at = -1
    while True:
        for c in kids.get(at, []):
            if q_x[c] <= 0.0:
                raise ValueError("drafter proposed a token outside its own distribution")
            if verify_mod._accept(float(r_x[c]), float(q_x[c]), rng.random()):
                path.append(c)
                at = c
                break
        else:
            return path, draws[at + 1]


def host_tree(tree: DraftTree) -> DraftTree:
    """The tree with its q rows on the host (relaxed verification works there)."""
    if not any(isinstance(q, mx.array) for q in tree.q):
        return tree
    q = [to_host(r).astype(np.float64) if isinstance(r, mx.array) else r for r in tree.q]
    return DraftTree(tree.tokens, tree.parents, q, tree.guessed)

