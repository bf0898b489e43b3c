"""Relaxed verification (relaxed.py) with the target's rows on the device: the ensemble
p_ens, its TV from p and the budget are mx operations over every row at once, and the
exact device rule (verify_device.py) runs against the rows they give; the per-row
numbers the counters need (TV, whether the blend was used or refused, and in greedy
decoding the ensemble's token) are read in the rule's one sync. A learned weight (a
RelaxHead) works on host rows: relaxed.py's own path.

With weight 0 or budget 0 every row is the target's own, so the outcome (and the
random numbers it uses) is exactly the exact rule's.
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx
import numpy as np

from mlxspec.device_sampling import probs_rows
from mlxspec.tree import DraftTree


def ensemble_rows(p: mx.array, q: mx.array, weight: float) -> mx.array:
    """relaxed.ensemble per row: p^(1-w) q^w over q's support, rescaled to p's mass there."""
    s = q > 0
    mass = mx.sum(mx.where(s, p, 0.0), axis=-1, keepdims=True)
    z = mx.where(s, (1.0 - weight) * mx.log(p) + weight * mx.log(mx.where(s, q, 1.0)), -mx.inf)
    z = mx.exp(z - mx.max(z, axis=-1, keepdims=True))
    out = mx.where(s, mass * z / mx.maximum(mx.sum(z, axis=-1, keepdims=True), 1e-30), p)
    return mx.where(mass > 0, out, p)


def _draft_rows(tree: DraftTree, V: int) -> tuple[list[int], Optional[mx.array]]:
    """The rows (1 + parent) whose position has a drafted child, and that child's q (the
    first drafted child, as relaxed._draft_q)."""
    rows, qs = [], []
    for c, (p, q) in enumerate(zip(tree.parents, tree.q)):
        if q is not None and p + 1 not in rows:
            rows.append(p + 1)
            qs.append((q if isinstance(q, mx.array) else mx.array(np.asarray(q))).astype(mx.float32).reshape(V))
    return rows, (mx.stack(qs) if qs else None)


class DeviceBlend:
    """The hooks verify_device.verify calls: rows against p_ens, then the counters."""

    def __init__(self, relax, count):
        self.relax, self.count_ = relax, count  # a relaxed.Relaxed, a relaxed.Counter
        self._rows = []

    def _blend(self, p_rows: mx.array, q: mx.array):
        """(rows to use, TV used or 0, refused, used) for rows with a draft q."""
        e = ensemble_rows(p_rows, q, self.relax.weight)
        d = 0.5 * mx.sum(mx.abs(e - p_rows), axis=-1)
        over = d > self.relax.budget
        used = (d > 0) & ~over
        return mx.where(used[:, None], e, p_rows), mx.where(used, d, 0.0), over, used

    def sampling(self, P: mx.array, tree: DraftTree) -> tuple[mx.array, list]:
        self._rows, q = _draft_rows(tree, P.shape[-1])
        if q is None or self.relax.weight <= 0.0:
            self._rows = []
            return P, []
        idx = mx.array(self._rows)
        r, d, over, used = self._blend(P[idx], q)
        P = P * 1.0
        P[idx] = r
        return P, [d, over, used, used]

    def greedy(self, logits: mx.array, ctx, params, best: mx.array, tree: DraftTree) -> tuple[mx.array, list]:
        from mlxspec.sampling import greedy_view

        self._rows, q = _draft_rows(tree, logits.shape[-1])
        if q is None or self.relax.weight <= 0.0:
            self._rows = []
            return best, []
        idx = mx.array(self._rows)
        view, _ = probs_rows(logits[idx], None if ctx is None else [ctx[i] for i in self._rows], greedy_view(params))
        r, d, over, used = self._blend(view, q)
        ens = mx.where(used, mx.argmax(r, axis=-1).astype(best.dtype), best[idx])
        new = best * 1
        new[idx] = ens
        return new, [d, over, used, ens != best[idx]]

    def count(self, visited: list[int], aux: list) -> None:
        """Counts every position the walk verified (relaxed.Counter.add)."""
        at = {row: i for i, row in enumerate(self._rows)}
        for row in visited:
            i = at.get(row)
            if i is None:
                self.count_.add(False, 0.0, False, False)
            else:
                d, over, used, differs = (a[i] for a in aux)
                self.count_.add(bool(used), float(d), bool(over), bool(differs))
