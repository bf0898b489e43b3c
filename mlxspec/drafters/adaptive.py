"""The adapting head drafter (issue 15): a HeadDrafter whose head learns from every reply.

It owns an `mlxspec.adapt.Adapter`: its runner records the target's states of every
verified forward into the adapter's buffer, reset/extend feed the verified tokens, and
`end_reply(stats, seconds)` (called by response.responses when a reply ends) runs one
time-boxed training slice, by default at most `budget_fraction` (10%) of the reply's
time. After a slice changed the head, what was computed with the old weights is rebuilt
before the next draft: the runner's head cache (from the layer-k states it kept) and the
core vocabulary's LM-head rows (with the dynamic vocabulary the decayed counts may
re-rank the core; the static one keeps its ranking, FR-Spec's fixed core). Verification
never depends on the head: output stays lossless whatever the head does.

`idle_update(stop)` is for a chat front end: train while the person reads and types,
returning as soon as `stop()` is true (at most one optimiser step later).
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import KVCache

from mlxspec.drafters.head import DEFAULT_MIN_CONFIDENCE, DEFAULT_NEIGHBOURS, DEFAULT_TAIL, HeadDrafter
from mlxspec.drafters.head_runner import HeadTargetRunner
from mlxspec.head.linear import LINEAR
from mlxspec.head.vocab import DraftVocab

DEFAULT_BUDGET_FRACTION = 0.10
# A linear head's top-1 misses where its top-4 often holds the target's token: its tree
# verifies the root's 4 likeliest children (docs/benchmarks.md, "Thirteenth session").
LINEAR_ROOT_WIDTH = 4
_HISTORY_CAP = 256 << 20  # bytes of layer-k/final states kept to rebuild the head cache


class AdaptiveRunner(HeadTargetRunner):
    """A HeadTargetRunner that keeps the states of its verified positions, so the head's
    cache can be rebuilt after the head's weights changed (refresh_head)."""

    def __init__(self, model, head, recorder=None):
        super().__init__(model, head)
        self.recorder = recorder
        # (start, h_low, hn) of verified positions, contiguous; the oldest leave over the cap
        self._hist: list[tuple[int, mx.array, mx.array]] = []

    def _rebuild_head(self, start, h_low, hn) -> None:
        super()._rebuild_head(start, h_low, hn)
        kept = []
        for s, a, b in self._hist:
            if s >= start:
                continue
            if s + a.shape[1] > start:
                a, b = a[:, : start - s], b[:, : start - s]
            kept.append((s, a, b))
        kept.append((start, h_low, hn))
        row = 2 * h_low.shape[-1] * h_low.dtype.size
        while len(kept) > 1 and sum(a.shape[1] for _, a, _ in kept) * row > _HISTORY_CAP:
            kept.pop(0)
        self._hist = kept

    def _states(self, tokens: list[int]) -> tuple[mx.array, mx.array]:
        """Layer-k and final normalised states of positions 0..length-1: kept ones, or
        recomputed over temporary caches when the history is incomplete."""
        n = self.length
        if self._hist and self._hist[0][0] == 0:
            h = mx.concatenate([a for _, a, _ in self._hist], axis=1)[:, :n]
            f = mx.concatenate([b for _, _, b in self._hist], axis=1)[:, :n]
            if h.shape[1] == n:
                return h, f
        caches = [KVCache() for _ in range(self.lm.num_layers)]
        h = self.lm.run_layers(self.lm.embed([int(t) for t in tokens[:n]]), 0, self.k, caches)
        f = self.lm.norm(self.lm.run_layers(h, self.k, self.lm.num_layers, caches)) \
            if self.head.config.feature_input else h
        return h, f

    def refresh_head(self, tokens: list[int]) -> None:
        """The head changed: drop pending drafts and rebuild its cache over the verified
        positions (`tokens`: at least the first `length` tokens of the sequence)."""
        self._rewind_lower(self.low_len - self.length)
        self._pend_tokens, self._pend_h, self._pend_par = [], [], []
        self._tree = None
        if self.length == 0:
            self.head_cache = KVCache()
            return
        if not self.head.uses_cache:  # nothing else depends on its weights
            return
        h, f = self._states(tokens)
        recorder, self.recorder = self.recorder, None  # the buffer has these rows already
        try:
            self._rebuild_head(0, h, f)
        finally:
            self.recorder = recorder
        mx.eval(self._feats, self.head_cache.keys, self.head_cache.values)


class AdaptiveHeadDrafter(HeadDrafter):
    def __init__(self, model, adapter, vocab_mode: str = "dynamic", tail_capacity: int = DEFAULT_TAIL,
                 num_neighbours: int = DEFAULT_NEIGHBOURS, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                 budget_fraction: float = DEFAULT_BUDGET_FRACTION, learn: bool = True,
                 label: Optional[str] = None, **kw):
        self.adapter = adapter
        self.budget_fraction = float(budget_fraction)
        self.learn = learn  # False: the same head frozen (nothing trained, core not re-ranked)
        self.max_steps: Optional[int] = None  # per reply, on top of the time budget
        self.save = True  # persist after each update (tests and benchmarks may turn it off)
        core = adapter.current_ranking()[: adapter.core_size]
        if adapter.head.config.kind == LINEAR:
            kw.setdefault("root_width", LINEAR_ROOT_WIDTH)
        super().__init__(model, adapter.head, core, vocab_mode=vocab_mode, tail_capacity=tail_capacity,
                         num_neighbours=num_neighbours, min_confidence=min_confidence,
                         eos_ids=adapter.eos_ids, label=label or "head:adapting", **kw)
        self._runner_made: Optional[AdaptiveRunner] = None
        self._save_s = 0.0  # EMA of one save's seconds (spent inside the budget)
        self.last_update: dict = {"steps": 0, "seconds": 0.0}
        self._hint: Optional[float] = None
        self.agreement: Optional[float] = None  # held-out agreement on the last reply

    # -- Drafter interface ------------------------------------------------------------
    def make_runner(self, model) -> AdaptiveRunner:
        if model is not self.model:
            raise ValueError("this head drafter was built for another model object")
        self._runner_made = AdaptiveRunner(model, self.head, self.adapter.buffer.record if self.learn else None)
        return self._runner_made

    def reset(self, tokens, runner) -> None:
        super().reset(tokens, runner)
        if self.learn:
            self.adapter.reset_tokens(self._seq)

    def extend(self, tokens) -> None:
        super().extend(tokens)
        if self.learn:
            self.adapter.extend_tokens([int(t) for t in tokens])

    # -- adaptation -------------------------------------------------------------------
    def end_reply(self, stats, seconds: float) -> dict:
        """A reply ended (its SpecStats, its seconds): record its acceptance, then train
        for at most budget_fraction of its time (saving included)."""
        if not self.learn:
            return {"steps": 0, "seconds": 0.0}
        drafted = getattr(stats, "drafted", 0)
        self.adapter.end_reply(stats.acceptance_rate if drafted else None)
        # Measured before training on this reply: held out, and available even when the
        # governor gave the head no rounds.
        self._hint = self.agreement = self.adapter.trainer.newest_agreement()
        return self.update(self.budget_fraction * max(0.0, float(seconds)), max_steps=self.max_steps)

    def status(self, last: int = 64) -> dict:
        """What a front end shows: per-reply acceptance (oldest first; replies that drafted),
        the held-out agreement on the last reply (also when it did not draft), updates,
        optimiser steps and the last training slice."""
        c = self.adapter.counters
        return {"acceptance": list(c.acceptance[-last:]), "agreement": self.agreement, "updates": c.updates,
                "steps": self.adapter.trainer.steps, "last": dict(self.last_update)}

    def acceptance_hint(self) -> Optional[float]:
        hint, self._hint = self._hint, None
        return hint if self.learn else None

    def idle_update(self, stop: Callable[[], bool], budget_s: float = 30.0) -> dict:
        """Train between replies until stop() (checked before each step) or budget_s."""
        return self.update(budget_s, stop)

    def update(self, budget_s: float, stop: Optional[Callable[[], bool]] = None,
               max_steps: Optional[int] = None) -> dict:
        t0 = time.perf_counter()
        out = {"steps": 0, "seconds": 0.0}
        train_s = budget_s - self._save_s
        if self.learn and train_s > 0:
            out = self.adapter.update(train_s, stop, max_steps, save=False)
            if out["steps"]:
                if self.save:
                    ts = time.perf_counter()
                    self.adapter.save()
                    dt = time.perf_counter() - ts
                    self._save_s = dt if not self._save_s else 0.7 * self._save_s + 0.3 * dt
                self.refresh()
        out = dict(out, seconds=round(time.perf_counter() - t0, 4))
        self.last_update = out
        return out

    def refresh(self) -> None:
        """Rebuild what depends on the head's weights and the core ranking."""
        core = np.asarray(self.adapter.current_ranking()[: self.adapter.core_size], dtype=np.int32)
        if self.vocab.mode == "dynamic" and not np.array_equal(np.sort(core), np.sort(self.vocab.core)):
            v = self.vocab
            self.vocab = DraftVocab(v.vocab_size, list(self.adapter.eos_ids) + [int(t) for t in core],
                                    mode=v.mode, tail_capacity=v.tail_capacity, neighbours=v.neighbours)
            self.vocab.reset(self._seq)
            self._core = self.lm.lm_head_rows(self.vocab.core)
            self._tail, self._tail_mask, self._tail_version = None, None, -1
            self.adapter.set_core(self.vocab.core)
        run = self._runner if isinstance(self._runner, AdaptiveRunner) else self._runner_made
        if run is not None:
            run.refresh_head(self._seq)


def adaptive_part(drafter):
    """The adapting head inside a drafter (alone or composed with branch sources)."""
    for d in (drafter, getattr(drafter, "primary", None)):
        if isinstance(d, AdaptiveHeadDrafter):
            return d
    return None
