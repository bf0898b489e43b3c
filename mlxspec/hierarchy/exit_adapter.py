"""The trained early exit: an affine map from the normalised state at layer m to the
target's final normalised state, in front of the target's own LM head (HiSpec trains
its exits; ours learns on the device from what the target computes anyway).

    exit logits = lm_head([norm(h_m), 1] @ W_m)

W_m is the ridge solution pulled towards the untrained exit W0 = [I; 0]:
    W_m = (G + lam I)^-1 (B + lam W0),  G = sum x x^T,  B = sum x y^T,
over every (layer-m state, final state) pair of the target's forwards (prefill, plain
steps, verification; runtime/exit_tap.py): no extra passes, no optimiser, no learning
rate, and the sufficient statistics G, B carry from reply to reply and from session to
session (exit_store.py). lam is `prior_rows` rows' worth of the data's mean energy, so
with little data the exit stays near the untrained one.

A few candidate layers learn at once; each is scored prequentially (its exit, fitted
before a reply, against the target's tokens of that reply, on a sample of its rows) and
the one whose agreement buys the most tokens per second under the early-exit policy's
cost model runs (`choose`). W changes only between replies (`refit`), never inside a
round, so every round is exact for the exit it has.
"""
from __future__ import annotations

from typing import Optional, Sequence

import mlx.core as mx

from mlxspec.ridge import solve

FRACTIONS = (0.5, 0.75, 0.875)  # candidate exits, as fractions of the depth
PRIOR_ROWS = 48.0
MIN_ROWS = 64  # rows before a fitted exit replaces the untrained one
FOLD_ROWS = 256  # pending rows folded into the statistics at once
EVAL_ROWS = 32  # rows of each reply its exits are scored on (an LM head each)
_FORGET = 0.7  # weight of past replies in the measured agreement
_PRIOR_AGREE = (0.3, 2.0)  # (agreement, weight in rows) before any measurement


def candidate_layers(num_layers: int, above: int = 0, fractions: Sequence[float] = FRACTIONS) -> tuple:
    """Exit layers at `fractions` of the depth, above layer `above` (a head's), below the top."""
    out = {max(above + 1, min(num_layers - 1, round(f * num_layers))) for f in fractions}
    return tuple(sorted(m for m in out if above < m < num_layers))


class _Agreement:
    def __init__(self):
        self.hits, self.rows = _PRIOR_AGREE[0] * _PRIOR_AGREE[1], _PRIOR_AGREE[1]
        self.untrained = None  # the untrained exit's, on the same rows (last reply)
        self.last = None

    def add(self, hits: int, rows: int) -> None:
        self.hits = self.hits * _FORGET + hits
        self.rows = self.rows * _FORGET + rows
        self.last = hits / rows if rows else None

    @property
    def value(self) -> float:
        return self.hits / self.rows


class ExitAdapter:
    def __init__(self, lm, layers: Optional[Sequence[int]] = None, prior_rows: float = PRIOR_ROWS):
        self.lm = lm
        self.layers = tuple(sorted(set(int(m) for m in (layers or candidate_layers(lm.num_layers)))))
        if not self.layers or not all(0 < m < lm.num_layers for m in self.layers):
            raise ValueError(f"exit layers must be in 1..{lm.num_layers - 1}, got {self.layers}")
        d = lm.hidden_size
        self.prior_rows = float(prior_rows)
        self.G = {m: mx.zeros((d + 1, d + 1)) for m in self.layers}
        self.B = {m: mx.zeros((d + 1, d)) for m in self.layers}
        self.W: dict = {m: None for m in self.layers}
        self.agreement = {m: _Agreement() for m in self.layers}
        self.rows = 0  # rows in the statistics
        self.fits = 0
        self._pending: list = []  # (states, hn) not folded yet
        self._pending_rows = 0
        self._sample: list = []  # (states, hn) rows of this reply to score the exits on
        self._sample_rows = 0
        self._fitted_rows = 0

    # -- the exit --------------------------------------------------------------------
    def state(self, m: int, h_m: mx.array) -> mx.array:
        """What the LM head reads at exit layer m (the untrained exit: norm(h_m))."""
        x = self.lm.norm(h_m)
        W = self.W.get(m)
        if W is None:
            return x
        return (x.astype(mx.float32) @ W[:-1] + W[-1]).astype(h_m.dtype)

    # -- learning (the tap protocol) -----------------------------------------------
    def observe(self, states: dict, hn: mx.array, prompt: bool = False) -> None:
        states = {m: h for m, h in states.items() if m in self.G}
        if not states:
            return
        n = int(hn.shape[1])
        self._pending.append((states, hn))
        self._pending_rows += n
        if not prompt and self._sample_rows < EVAL_ROWS:  # generated rows only
            take = min(n, EVAL_ROWS - self._sample_rows)
            self._sample.append(({m: h[:, -take:] for m, h in states.items()}, hn[:, -take:]))
            self._sample_rows += take
        if self._pending_rows >= FOLD_ROWS:
            self.fold()

    def _x(self, h: mx.array) -> mx.array:
        x = self.lm.norm(h)[0].astype(mx.float32)
        return mx.concatenate([x, mx.ones((x.shape[0], 1))], axis=1)

    def fold(self) -> None:
        """Add the pending rows to the statistics (on the device, not waited for)."""
        if not self._pending:
            return
        for m in self.layers:
            pairs = [(s[m], hn) for s, hn in self._pending if m in s]
            if not pairs:
                continue
            X = mx.concatenate([self._x(h) for h, _ in pairs])
            Y = mx.concatenate([hn[0].astype(mx.float32) for _, hn in pairs])
            self.G[m] = self.G[m] + X.T @ X
            self.B[m] = self.B[m] + X.T @ Y
        self.rows += sum(int(hn.shape[1]) for _, hn in self._pending)
        self._pending, self._pending_rows = [], 0
        mx.async_eval(list(self.G.values()) + list(self.B.values()))

    def refit(self) -> bool:
        """Between replies: score each exit on the sampled rows, fold, solve (from
        MIN_ROWS rows on). False when nothing new was seen."""
        self._score()
        self.fold()
        if self.rows == self._fitted_rows:
            return False
        self._fitted_rows = self.rows
        if self.rows < MIN_ROWS:
            return True
        d = self.lm.hidden_size
        W0 = mx.concatenate([mx.eye(d), mx.zeros((1, d))])
        for m in self.layers:
            self.W[m] = solve(self.G[m], self.B[m], W0, self.prior_rows, self.rows)
        mx.eval(list(self.W.values()))
        self.fits += 1
        return True

    def _score(self) -> None:
        if not self._sample:
            return
        lm = self.lm
        hn = mx.concatenate([h for _, h in self._sample], axis=1)
        want_all = mx.argmax(lm.logits(hn)[0], axis=-1)  # the target's tokens, once
        bounds, at = [], 0
        for _, h in self._sample:
            bounds.append((at, at + int(h.shape[1])))
            at += int(h.shape[1])
        for m in self.layers:
            idx = [i for i, (s, _) in enumerate(self._sample) if m in s]
            if not idx:
                continue
            h_m = mx.concatenate([self._sample[i][0][m] for i in idx], axis=1)
            want = mx.concatenate([want_all[bounds[i][0]:bounds[i][1]] for i in idx])
            got = mx.argmax(lm.logits(self.state(m, h_m))[0], axis=-1)
            raw = mx.argmax(lm.logits(lm.norm(h_m))[0], axis=-1)
            hits, base = (int(v) for v in mx.stack([(got == want).sum(), (raw == want).sum()]).tolist())
            n = int(want.shape[0])
            self.agreement[m].add(hits, n)
            self.agreement[m].untrained = base / n
        self._sample, self._sample_rows = [], 0

    # -- the choice ----------------------------------------------------------------
    def choose(self, cost_model, max_len: int = 16) -> int:
        """The exit layer whose measured agreement buys the most tokens per second under
        the policy's model (hierarchy/policy.py): more agreement against a deeper exit."""
        from mlxspec.hierarchy.policy import ExitPolicy

        L = self.lm.num_layers

        def value(m):
            p = ExitPolicy(m / L, max_len)
            p.prior = self.agreement[m].value
            n = p.length(cost_model, 1.0, 0)
            return p.expected(n) / p.cost(n, cost_model, 1.0)

        return max(self.layers, key=lambda m: (value(m), -m))

    def summary(self) -> dict:
        return {"layers": list(self.layers), "rows": self.rows, "fits": self.fits,
                "agreement": {str(m): round(a.value, 4) for m, a in self.agreement.items()},
                "last_agreement": {str(m): a.last for m, a in self.agreement.items()},
                "untrained_agreement": {str(m): a.untrained for m, a in self.agreement.items()}}
