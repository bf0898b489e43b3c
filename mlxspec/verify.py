"""Verification of a draft against the target's logits.

Greedy: keep the longest prefix that matches the target's argmax, then the target's own
token. Sampling (Leviathan et al. / Chen et al.): accept draft token x with probability
min(1, p(x)/q(x)); on rejection sample from norm(max(0, p - q)); if every draft token is
accepted, sample a bonus token from p. The output is distributed exactly as the target.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from mlxspec.tree import children_of
from mlxspec.sampling import SamplingParams, greedy_token, probs_from_logits, sample


def verify_greedy(
    target_logits: np.ndarray, drafts: Sequence[int], context: list[int], params: SamplingParams
) -> tuple[int, int]:
    """target_logits row i predicts the token after context + drafts[:i]."""
    for i, tok in enumerate(drafts):
        best = greedy_token(target_logits[i], context + list(drafts[:i]), params)
        if best != tok:
            return i, best
    n = len(drafts)
    return n, greedy_token(target_logits[n], context + list(drafts), params)


def verify_sampling(
    target_logits: np.ndarray,
    drafts: Sequence[int],
    draft_probs: Optional[np.ndarray],
    context: list[int],
    params: SamplingParams,
    rng: np.random.Generator,
) -> tuple[int, int]:
    for i, tok in enumerate(drafts):
        p = probs_from_logits(target_logits[i], context + list(drafts[:i]), params)
        q = draft_probs[i]
        if q[tok] <= 0.0:
            raise ValueError("drafter proposed a token outside its own distribution")
        if rng.random() * q[tok] < p[tok]:  # u < p/q without dividing
            continue
        residual = np.maximum(p - q, 0.0)
        total = residual.sum()
        # total == 0 only if p == q, where rejection has probability zero.
        return i, sample(residual / total if total > 0 else p, rng)
    n = len(drafts)
    p = probs_from_logits(target_logits[n], context + list(drafts), params)
    return n, sample(p, rng)


def verify_tree_greedy(
    target_logits: np.ndarray,
    nodes: Sequence[int],
    parents: Sequence[int],
    context: list[int],
    params: SamplingParams,
) -> tuple[list[int], int]:
    """Greedy verification of a draft tree. Row 0 of target_logits predicts the token
    after `context` (the tree's root is context[-1]); row i + 1 the token after node i
    and its ancestors. parents[i] is node i's parent (-1: a child of the root). Returns
    the accepted nodes (a root-to-node path, possibly empty) and the target's next token."""
    children = children_of(nodes, parents)
    path: list[int] = []
    at, text = -1, list(context)
    while True:
        best = greedy_token(target_logits[at + 1], text, params)
        nxt = children.get(at, {}).get(best)
        if nxt is None:
            return path, best
        path.append(nxt)
        text.append(best)
        at = nxt
