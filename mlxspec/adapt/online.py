"""Online training of the draft head on the StateBuffer, in short time-boxed slices.

The loss is the offline one (mlxspec.head.objective.head_loss: KL to the target on the core
vocabulary + (1 - cosine) to its final hidden state) on windows of consecutive verified
positions (buffer chunks). `step(budget_s)` runs optimiser steps (AdamW, warmup then a
constant rate, gradient clipping) while the next one is expected to fit the budget, and
checks `stop()` before each one, so a new prompt never waits for more than one step.

Curriculum (the weights of positions in the loss):
- prompt rows count `prompt_weight`, reply rows 1 (the head drafts replies);
- for the first `curriculum_steps` steps each position is also weighted by the target's
  confidence (its top probability on the core) to the power alpha, alpha going 1 -> 0:
  the head learns the easy, draftable positions first, then all of them;
- a feature-input head trains on next-token prediction only (unroll 1) during the
  curriculum, then also on its own predicted features (`unroll`), as inside a chain;
- each batch takes `recent_fraction` of its windows from the newest chunks (what the
  person does now) and the rest uniformly from the whole buffer, whose reservoir keeps
  old data (replay against forgetting).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from mlxspec.adapt.buffer import StateBuffer
from mlxspec.head.model import DraftHead
from mlxspec.runtime.layered import LayeredModel
from mlxspec.head.objective import GRAD_CLIP, head_loss, score_batches


@dataclass
class AdaptSettings:
    lr: float = 3e-4
    warmup: int = 10
    batch: int = 4  # windows (chunks) per step
    hidden_weight: float = 1.0
    prompt_weight: float = 0.25
    curriculum_steps: int = 100
    unroll: int = 2
    feature_noise: float = 0.1
    recent_fraction: float = 0.5
    recent_chunks: int = 8  # "the newest chunks" of a batch's recent share
    weight_decay: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AdaptSettings":
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in (d or {}).items() if k in names})


class OnlineTrainer:
    def __init__(self, model, head: DraftHead, buffer: StateBuffer, core_ids,
                 settings: Optional[AdaptSettings] = None, optimizer_state: Optional[dict] = None,
                 steps: int = 0):
        self.head = head
        self.buffer = buffer
        self.s = settings or AdaptSettings()
        self.core_ids = np.asarray(core_ids, dtype=np.int32)
        lm = LayeredModel(model)
        self.W = lm.lm_head_weight
        self.core_w = self.W[mx.array(self.core_ids)].astype(mx.float32)
        mx.eval(self.core_w)
        lr, warm = self.s.lr, max(1, self.s.warmup)
        self.opt = optim.AdamW(learning_rate=lambda step: lr * mx.minimum(1.0, (step + 1) / warm),
                               weight_decay=self.s.weight_decay)
        self.opt.init(head.trainable_parameters())
        if optimizer_state:
            self.opt.state = tree_unflatten(list(optimizer_state.items()))
        self.steps = int(steps)  # optimiser steps over the head's life (persisted)
        self._grad = nn.value_and_grad(head, head_loss)
        self._rng = np.random.default_rng(self.s.seed + self.steps)
        self._step_s: Optional[float] = None  # EMA of one step's seconds
        self.last = {"steps": 0, "loss": None, "agree": None, "seconds": 0.0}

    def optimizer_state(self) -> dict:
        return dict(tree_flatten(self.opt.state))

    # -- batches -------------------------------------------------------------------------
    def _confidence(self, ch) -> np.ndarray:
        if ch.conf is None or ch.conf.shape[0] != ch.n:
            logits = mx.array(ch.hn[: ch.n]).astype(mx.float32) @ self.core_w.T
            ch.conf = np.array(mx.max(mx.softmax(logits, axis=-1), axis=-1))
        return ch.conf

    def _pick(self) -> list:
        chunks = [c for c in self.buffer.chunks if c.n >= 2]
        if not chunks:
            return []
        n = min(self.s.batch, len(chunks))
        n_recent = int(round(n * self.s.recent_fraction))
        newest = [c for c in self.buffer.newest(self.s.recent_chunks) if c.n >= 2]
        picked = []
        if newest and n_recent:
            picked += [newest[i] for i in self._rng.choice(len(newest), min(n_recent, len(newest)), replace=False)]
        rest = [c for c in chunks if all(c is not p for p in picked)]
        if rest and len(picked) < n:
            picked += [rest[i] for i in self._rng.choice(len(rest), min(n - len(picked), len(rest)), replace=False)]
        return picked

    def _batch(self, picked, curriculum: bool):
        T = max(c.n for c in picked)
        d = picked[0].hk.shape[1]
        hk = np.zeros((len(picked), T, d), dtype=np.float16)
        hn = np.zeros((len(picked), T, d), dtype=np.float16)
        w = np.zeros((len(picked), T), dtype=np.float32)
        alpha = max(0.0, 1.0 - self.steps / max(1, self.s.curriculum_steps)) if curriculum else 0.0
        for i, c in enumerate(picked):
            hk[i, : c.n], hn[i, : c.n] = c.hk[: c.n], c.hn[: c.n]
            wi = np.where(c.reply[: c.n], 1.0, self.s.prompt_weight).astype(np.float32)
            if alpha > 0:
                wi = wi * self._confidence(c) ** alpha
            w[i, : c.n] = wi
        return (mx.array(hk).astype(mx.float32), mx.array(hn).astype(mx.float32), mx.array(w))

    # -- training ------------------------------------------------------------------------
    def step(self, budget_s: float, stop: Optional[Callable[[], bool]] = None,
             max_steps: Optional[int] = None) -> dict:
        """Optimiser steps while the next one should end within `budget_s` seconds (at
        least one when the budget is positive and nothing is known yet); returns
        {"steps", "loss", "agree", "seconds"} of this slice (loss/agree: the last step's)."""
        t0 = time.perf_counter()
        done, loss_v, agree_v = 0, None, None
        self.head.train()
        while True:
            if max_steps is not None and done >= max_steps:
                break
            if stop is not None and stop():
                break
            spent = time.perf_counter() - t0
            if spent + (self._step_s or 0.0) > budget_s or budget_s <= 0:
                break
            picked = self._pick()
            if not picked:
                break
            ts = time.perf_counter()
            in_curriculum = self.steps < self.s.curriculum_steps
            hk, hn, w = self._batch(picked, in_curriculum)
            unroll = 1 if in_curriculum else self.s.unroll
            key = mx.random.key(self.s.seed * 1_000_003 + self.steps)
            (loss, (_, agree)), grads = self._grad(self.head, hk, hn, self.core_w, self.s.hidden_weight,
                                                   self.s.feature_noise, key, w, unroll)
            grads, _ = optim.clip_grad_norm(grads, max_norm=GRAD_CLIP)
            self.opt.update(self.head, grads)
            mx.eval(self.head.parameters(), self.opt.state, loss, agree)
            loss_v, agree_v = float(loss.item()), float(agree.item())
            self.steps += 1
            done += 1
            dt = time.perf_counter() - ts
            self._step_s = dt if self._step_s is None else 0.7 * self._step_s + 0.3 * dt
        self.head.eval()
        self.last = {"steps": done, "loss": loss_v, "agree": agree_v,
                     "seconds": round(time.perf_counter() - t0, 4)}
        return self.last

    def newest_agreement(self, chunks: int = 2) -> Optional[float]:
        """Top-1 agreement of the head with the target (on the core; a feature-input head
        fed its own features, as inside a chain) on the reply rows of the newest chunks:
        held out when called before the step that trains on them."""
        picked = [c for c in self.buffer.newest(chunks) if c.n >= 2 and c.reply[: c.n].any()]
        if not picked:
            return None

        def batches():
            for c in picked:
                yield (mx.array(c.hk[None, : c.n]).astype(mx.float32), mx.array(c.hn[None, : c.n]).astype(mx.float32),
                       mx.array(c.reply[None, : c.n].astype(np.float32)))

        self.head.eval()
        got = score_batches(self.head, batches(), self.W, self.core_ids)
        return got.get("top1_agreement_chained", got["top1_agreement_core_vocab"])

    def evaluate(self, buffer: Optional[StateBuffer] = None, reply_only: bool = True) -> dict:
        """Teacher-forced proxies (head.objective.score_batches: top-1 agreement with the
        target over the full vocabulary and the core...) on a buffer's windows (default:
        the training buffer; pass another one for held-out rows)."""
        buf = buffer or self.buffer

        def batches():
            for c in buf.chunks:
                w = c.reply[: c.n] if reply_only else np.ones(c.n, dtype=bool)
                yield (mx.array(c.hk[None, : c.n]).astype(mx.float32), mx.array(c.hn[None, : c.n]).astype(mx.float32),
                       mx.array(w[None].astype(np.float32)))

        self.head.eval()
        return score_batches(self.head, batches(), self.W, self.core_ids)
