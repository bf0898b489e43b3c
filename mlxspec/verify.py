"""Verification of a draft tree against the target's logits: one rule for chains and trees.

Row 0 of the target's logits predicts the token after the context (the tree's root is
its last token); row i + 1 the token after node i and its ancestors.

Greedy: walk down the tree while the target's argmax is a child; the first argmax that
is not a child is the target's own next token.

Sampling: recursive rejection sampling over the siblings (SpecInfer's multi-draft rule;
a chain is Leviathan et al. / Chen et al.). At a node with target distribution r (first
p), child x proposed from q (its drafter's row; a point mass for a deterministic token)
is accepted with probability min(1, r(x)/q(x)); on rejection r becomes
norm(max(0, r - q)) and the next sibling is tried. When every child is rejected the
next token is drawn from r; after an accepted leaf, from the target's p there. Each
step is an exact sampler of r, so the output is distributed exactly as the target's.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from mlxspec.sampling import SamplingParams, greedy_token, probs_from_logits, sample
from mlxspec.tree import DraftTree, children_of


def verify(target_logits, tree: DraftTree, context: list[int], params: SamplingParams,
           rng: Optional[np.random.Generator] = None) -> tuple[list[int], int]:
    """(accepted node indices, a root-to-node path possibly empty; the target's next token).
    Logits on the device (an mx.array) are verified there (verify_device.py: the same
    rule, only ids and the compared probabilities read back); numpy rows here."""
    if not isinstance(target_logits, np.ndarray):
        from mlxspec import verify_device

        return verify_device.verify(target_logits, tree, context, params, rng)
    if params.greedy:
        return _verify_greedy(target_logits, tree, context, params)
    if rng is None:
        raise ValueError("sampling verification needs a random generator")
    return _verify_sampling(target_logits, tree, context, params, rng)


def _verify_greedy(logits, tree, context, params, choose=None):
    """`choose(row, text, at) -> token`: the token a position is verified against, given
    the target's logits row after node `at` (relaxed.py's ensemble argmax); None: the
    target's own greedy token (exact)."""
    children = children_of(tree.tokens, tree.parents)
    path: list[int] = []
    at, text = -1, list(context)
    while True:
        row = logits[at + 1]
        best = greedy_token(row, text, params) if choose is None else choose(row, text, at)
        nxt = children.get(at, {}).get(best)
        if nxt is None:
            return path, best
        path.append(nxt)
        text.append(best)
        at = nxt


def _accept(r_x: float, q_x: float, u: float) -> bool:
    """u < r(x)/q(x), without dividing."""
    return u * q_x < r_x


def _residual(r: np.ndarray, q: Optional[np.ndarray], x: int) -> np.ndarray:
    """norm(max(0, r - q)); q None is the point mass at x. r - q sums to zero only if
    r == q, where rejection has probability zero."""
    if q is None:
        out = r.copy()
        out[x] = 0.0
    else:
        out = np.maximum(r - q, 0.0)
    total = out.sum()
    return out / total if total > 0 else r


def kids_of(tree: DraftTree) -> dict[int, list[int]]:
    """Each node's children (-1: the root's), in proposal order."""
    kids: dict[int, list[int]] = {}
    for i, p in enumerate(tree.parents):
        kids.setdefault(int(p), []).append(i)
    return kids


def _verify_sampling(logits, tree, context, params, rng, against=None):
    """`against(p, children) -> r`: the distribution a position is verified against,
    given the target's p there (relaxed.py's ensemble); None: p itself (exact)."""
    kids = kids_of(tree)
    path: list[int] = []
    at, text = -1, list(context)
    while True:
        r = probs_from_logits(logits[at + 1], text, params)
        if against is not None:
            r = against(r, kids.get(at, []))
        for c in kids.get(at, []):
            x, q = tree.tokens[c], tree.q[c]
            q_x = 1.0 if q is None else float(q[x])
            if q_x <= 0.0:
                raise ValueError("drafter proposed a token outside its own distribution")
            if _accept(float(r[x]), q_x, rng.random()):
                path.append(c)
                text.append(x)
                at = c
                break
            r = _residual(r, q, x)
        else:
            return path, sample(r, rng)
