"""Online learning of the linear head (head/linear.py) in closed form.

Every committed row of the StateBuffer (position t of a verified context) gives one
regression pair: x_t = [norm(h_k,t) ; hn_(t-1) ; 1] -> y_t = hn_t, the target's final
normalised state, whose LM-head argmax is the token the head should draft. `step()` folds
the rows not folded yet into the ridge statistics (mlxspec/ridge.py) and refits the map:
one refit is one "step". A refit costs a Cholesky factorisation of a (2d+1)^2 matrix,
whatever the number of rows, so the head learns from a reply's rows right after it
instead of over thousands of optimiser steps. The statistics are the head's "optimiser
state": saved with it, so learning carries on in the next session.

The interface is OnlineTrainer's (adapt/online.py), so the Adapter, the adapting drafter
and the chat's idle training drive either.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import mlx.core as mx
import numpy as np

from mlxspec.adapt.buffer import StateBuffer
from mlxspec.head.linear import LinearHead, identity_map
from mlxspec.ridge import RidgeStats
from mlxspec.runtime.layered import LayeredModel

PRIOR_ROWS = 48.0  # rows' worth of pull towards the untrained exit (keeps a fit on few rows near it)


class RidgeTrainer:
    def __init__(self, model, head: LinearHead, buffer: StateBuffer, core_ids, settings=None,
                 optimizer_state: Optional[dict] = None, steps: int = 0, prior_rows: float = PRIOR_ROWS):
        self.head, self.buffer = head, buffer  # settings: OnlineTrainer's; a refit has none
        self.core_ids = np.asarray(core_ids, dtype=np.int32)
        lm = LayeredModel(model)
        self.W = lm.lm_head_weight
        self.core_w = self.W[mx.array(self.core_ids)].astype(mx.float32)
        mx.eval(self.core_w)
        self.prior_rows = float(prior_rows)
        self.W0 = identity_map(head.config)
        d_in, d = self.W0.shape
        self.stats = RidgeStats(d_in, d)
        st = optimizer_state or {}
        if {"ridge.G", "ridge.B", "ridge.rows"} <= set(st):
            try:
                self.stats = RidgeStats(d_in, d, st["ridge.G"], st["ridge.B"], float(st["ridge.rows"].item()))
            except ValueError:  # statistics of another head shape: start fresh
                pass
        self.steps = int(steps)  # refits over the head's life (persisted)
        self._folded: dict = {}  # chunk serial -> rows of it already in the statistics
        self.last = {"steps": 0, "loss": None, "agree": None, "seconds": 0.0}

    def optimizer_state(self) -> dict:
        return {"ridge.G": self.stats.G, "ridge.B": self.stats.B, "ridge.rows": mx.array([self.stats.rows])}

    # -- rows ----------------------------------------------------------------------------
    def _new_rows(self):
        """(hk, previous hn, hn, reply, labels) numpy rows not folded yet, and the marks
        {chunk serial: rows} that folding them sets.
        A chunk's first row takes its previous state from the chunk it continues; rows
        whose previous state is gone are skipped."""
        chunks = self.buffer.chunks
        ends = {(c.ctx, c.next_pos): c for c in chunks if c.n}
        hk, prev, hn, reply, labels, done = [], [], [], [], [], {}
        for c in chunks:
            lo = self._folded.get(c.serial, 0)
            if c.n <= lo:
                continue
            before = ends.get((c.ctx, c.pos)) if lo == 0 else None
            if lo > 0:
                p = c.hn[lo - 1 : c.n - 1]
            elif before is not None:
                p = np.concatenate([before.hn[before.n - 1 : before.n], c.hn[: c.n - 1]])
            else:  # the context's first row, or its predecessor was evicted
                lo, p = 1, c.hn[: c.n - 1]
            hk.append(c.hk[lo : c.n])
            prev.append(p)
            hn.append(c.hn[lo : c.n])
            reply.append(c.reply[lo : c.n])
            labels.append(c.labels[lo : c.n])
            done[c.serial] = c.n
        if not hk:
            return None, done
        return tuple(np.concatenate(x) for x in (hk, prev, hn, reply, labels)), done

    def _x(self, hk, prev) -> mx.array:
        x = self.head.features(mx.array(hk).astype(mx.float32)[None], mx.array(prev).astype(mx.float32)[None])[0]
        return mx.concatenate([x, mx.ones((x.shape[0], 1))], axis=1)

    # -- learning ------------------------------------------------------------------------
    def step(self, budget_s: float, stop: Optional[Callable[[], bool]] = None,
             max_steps: Optional[int] = None) -> dict:
        """Fold the new rows and refit (one step), when there are new rows and a positive
        budget."""
        t0 = time.perf_counter()
        done = 0
        if budget_s > 0 and (max_steps is None or max_steps > 0) and not (stop is not None and stop()):
            rows, marks = self._new_rows()
            new = rows is not None and len(rows[0]) > 0
            if new:
                hk, prev, hn = rows[:3]
                self.stats.add(self._x(hk, prev), mx.array(hn).astype(mx.float32))
            held = {c.serial for c in self.buffer.chunks}
            self._folded = {s: n for s, n in {**self._folded, **marks}.items() if s in held}
            if new:
                self.refit()
                done = 1
        self.last = {"steps": done, "loss": None, "agree": None, "seconds": round(time.perf_counter() - t0, 4)}
        return self.last

    def fold(self, hk: mx.array, prev: mx.array, hn: mx.array, weight: float = 1.0) -> None:
        """Fold rows given directly (T, d) each: states at positions t, the final
        normalised states at t-1 and at t (learning from files: adapt/texts.py)."""
        self.stats.add(self._x(hk, prev), hn.astype(mx.float32), weight)

    def refit(self) -> None:
        self.head.set_map(self.stats.solve(self.W0, self.prior_rows))
        self.steps += 1

    def newest_agreement(self, chunks: int = 2) -> Optional[float]:
        """Top-1 agreement (on the core vocabulary, fed its own previous prediction as
        inside a chain) with the tokens the target emitted, over the reply rows not
        folded yet: held out when called before the step that learns from them."""
        rows, _ = self._new_rows()
        if rows is None or not len(rows[0]):
            return None
        hk, prev, _, reply, labels = rows
        if not reply.any():
            return None
        idx = np.nonzero(reply)[0]
        W = self.head.as_map()
        first = self._x(hk, prev) @ W
        chained_prev = mx.concatenate([mx.array(prev[:1]).astype(mx.float32), first[:-1]])
        pred = self._x(hk, np.array(chained_prev)) @ W
        pick = np.array(mx.argmax(pred[mx.array(idx)] @ self.core_w.T, axis=-1))
        return float(np.mean(self.core_ids[pick] == labels[idx]))
