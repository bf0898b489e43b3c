"""Closed-form learning from the target's own states: ridge regression pulled to a prior.

    W = (G + lam I)^-1 (B + lam W0),   G = sum x x^T,  B = sum x y^T

The sufficient statistics stay on the device and carry over from reply to reply and
session to session; a refit is one Cholesky factorisation, no optimiser, no learning
rate. lam is `prior_rows` rows' worth of the data's mean energy (tr(G) / (rows d)), so
with little data W stays near W0 and the prior fades as rows arrive. The trained early
exit (hierarchy/exit_adapter.py) and the linear draft head's trainer
(adapt/ridge_trainer.py) both learn this way.
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx


class RidgeStats:
    def __init__(self, d_in: int, d_out: int, G: Optional[mx.array] = None, B: Optional[mx.array] = None,
                 rows: float = 0.0):
        self.G = mx.zeros((d_in, d_in)) if G is None else G.astype(mx.float32)
        self.B = mx.zeros((d_in, d_out)) if B is None else B.astype(mx.float32)
        if self.G.shape != (d_in, d_in) or self.B.shape != (d_in, d_out):
            raise ValueError(f"ridge statistics have shapes {self.G.shape}, {self.B.shape}, "
                             f"expected ({d_in}, {d_in}), ({d_in}, {d_out})")
        self.rows = float(rows)  # rows in the statistics

    def add(self, X: mx.array, Y: mx.array, weight: float = 1.0) -> None:
        """Fold rows X (n, d_in) -> Y (n, d_out), each counting `weight` rows; not waited for."""
        X, Y = X.astype(mx.float32), Y.astype(mx.float32)
        Xw = X if weight == 1.0 else X * weight
        self.G = self.G + Xw.T @ X
        self.B = self.B + Xw.T @ Y
        self.rows += float(weight) * float(X.shape[0])
        mx.async_eval(self.G, self.B)

    def solve(self, W0: mx.array, prior_rows: float) -> mx.array:
        """The ridge solution pulled towards W0 (d_in, d_out)."""
        return solve(self.G, self.B, W0, prior_rows, self.rows)


def solve(G: mx.array, B: mx.array, W0: mx.array, prior_rows: float, rows: float) -> mx.array:
    d = G.shape[0]
    lam = max(prior_rows * float(mx.trace(G).item()) / (max(rows, 1.0) * d), 1e-6)
    # G + lam I is symmetric positive definite: Cholesky, 3-5x faster than a general solve
    C = mx.linalg.cholesky(G + lam * mx.eye(d), stream=mx.cpu)
    Y = mx.linalg.solve_triangular(C, B + lam * W0, upper=False, stream=mx.cpu)
    W = mx.linalg.solve_triangular(C.T, Y, upper=True, stream=mx.cpu)
    mx.eval(W)
    return W
