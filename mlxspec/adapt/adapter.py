"""Adapter: one model's adapting head, its state buffer, trainer and saved state (see
mlxspec/adapt/__init__.py for the pieces)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np

from mlxspec.adapt import state as _state
from mlxspec.adapt.buffer import DEFAULT_CAP_BYTES, StateBuffer, TokenCounts
from mlxspec.adapt.online import AdaptSettings, OnlineTrainer
from mlxspec.adapt.ridge_trainer import RidgeTrainer
from mlxspec.head.linear import LINEAR

# A head made by adaptation: on layer 2, reading the target's features (EAGLE-style), a
# linear map learnt in closed form (head/linear.py): it learns from the first replies, where
# a transformer block trained by SGD needed hundreds of steps (docs/benchmarks.md).
NEW_HEAD_EXIT_LAYER = 2
NEW_HEAD_KIND = LINEAR


class Adapter:
    def __init__(self, model, model_dir: Path, head, ranking, counters: _state.Counters,
                 optimizer_state=None, counts=None, core_size: Optional[int] = None,
                 settings: Optional[AdaptSettings] = None, cap_bytes: int = DEFAULT_CAP_BYTES,
                 vocab_mode: str = "dynamic", eos_ids=()):
        from mlxspec.runtime.layered import LayeredModel
        from mlxspec.head.objective import default_vocab_size

        lm = LayeredModel(model)
        self.model, self.model_dir, self.head = model, Path(model_dir), head
        self.fingerprint = lm.fingerprint()
        self.ranking = np.asarray(ranking, dtype=np.int32)
        self.core_size = int(min(core_size or default_vocab_size(lm.vocab_size), len(self.ranking)))
        self.counters = counters
        self.vocab_mode, self.eos_ids = vocab_mode, [int(t) for t in eos_ids]
        self.buffer = StateBuffer(cap_bytes, vocab_size=lm.vocab_size)
        self._fed = 0  # buffer.tokens_seen already added to counters.tokens_seen
        if counts is not None and np.shape(counts) == (lm.vocab_size,):
            self.buffer.counts = TokenCounts(lm.vocab_size, values=counts)
        kind = RidgeTrainer if head.config.kind == LINEAR else OnlineTrainer
        self.trainer = kind(model, head, self.buffer, self.ranking[: self.core_size], settings,
                            optimizer_state, steps=counters.steps)

    @classmethod
    def open(cls, model, model_dir: Path, tokenizer=None, exit_layer: Optional[int] = None,
             new_head_kw: Optional[dict] = None, **kw) -> "Adapter":
        """Continue the model's adapted head; else start from its newest trained head;
        else from a new head initialised from the target's own layer (new_head)."""
        from mlxspec.drafters.head import build_head, find_heads
        from mlxspec.head.io import check_fingerprint, read_head
        from mlxspec.head.model import new_head
        from mlxspec.runtime.layered import LayeredModel

        eos = list(getattr(tokenizer, "eos_token_ids", None) or []) if tokenizer is not None else []
        lm = LayeredModel(model)
        got = _state.load(model_dir)
        if got is not None:
            check_fingerprint(got.head_file, lm.fingerprint())
            hf = got.head_file
            return cls(model, model_dir, build_head(model, hf), hf.core_ids, got.counters, got.optimizer_state,
                       got.counts, hf.settings.get("vocab"), eos_ids=eos, **kw)
        trained = [p for p in find_heads(model_dir) if p.stem != _state.ADAPTED]
        if trained:
            hf = read_head(trained[0])
            check_fingerprint(hf, lm.fingerprint())
            return cls(model, model_dir, build_head(model, hf), hf.core_ids, _state.Counters(base=trained[0].stem),
                       core_size=hf.settings.get("vocab"), eos_ids=eos, **kw)
        # No head yet: a new one in the recipe that trained best offline (docs/head.md),
        # its block a copy of the target's layer k; the core ranks by token id until the
        # decayed counts of this person's replies re-rank it (TokenCounts.rerank).
        ranking = list(dict.fromkeys(eos + list(range(lm.vocab_size))))
        recipe = {"feature_input": True, "kind": NEW_HEAD_KIND, **(new_head_kw or {})}
        k = min(NEW_HEAD_EXIT_LAYER, lm.num_layers - 1) if exit_layer is None else exit_layer
        return cls(model, model_dir, new_head(model, k, **recipe), ranking, _state.Counters(base=None),
                   eos_ids=eos, **kw)

    # -- feeding -------------------------------------------------------------------------
    def attach(self, runner) -> None:
        """Record every verified forward of a HeadTargetRunner (its `recorder` hook)."""
        runner.recorder = self.buffer.record

    def reset_tokens(self, tokens, prompt_len: Optional[int] = None) -> None:
        self.buffer.reset_tokens(tokens, prompt_len)

    def extend_tokens(self, tokens) -> None:
        self.buffer.extend_tokens(tokens)

    def end_reply(self, acceptance: Optional[float]) -> None:
        self.counters.record_reply(acceptance)

    # -- training and saving ---------------------------------------------------------------
    def update(self, budget_s: float, stop: Optional[Callable[[], bool]] = None,
               max_steps: Optional[int] = None, save: bool = True) -> dict:
        """One training slice; saved (atomically) when it made at least one step."""
        out = self.trainer.step(budget_s, stop, max_steps)
        if out["steps"]:
            self.counters.updates += 1
            if save:
                self.save()
        return out

    def current_ranking(self) -> np.ndarray:
        counts = self.buffer.counts
        if counts is None:
            return self.ranking
        return counts.rerank(self.ranking, self.core_size, always=self.eos_ids)

    def set_core(self, core_ids) -> None:
        """The drafter's core changed (re-ranked): train the KL term on the same rows."""
        import mlx.core as mx

        t = self.trainer
        t.core_ids = np.asarray(core_ids, dtype=np.int32)
        t.core_w = t.W[mx.array(t.core_ids)].astype(mx.float32)
        mx.eval(t.core_w)
        for ch in self.buffer.chunks:
            ch.conf = None  # confidences were over the old core

    def save(self) -> Path:
        c = self.counters
        c.tokens_seen += self.buffer.tokens_seen - self._fed
        self._fed = self.buffer.tokens_seen
        c.steps = self.trainer.steps
        c.buffer = self.buffer.summary()
        counts = self.buffer.counts.values() if self.buffer.counts is not None else None
        return _state.save(self.model_dir, self.head, self.current_ranking(), self.fingerprint, c,
                           self.trainer.optimizer_state(), counts,
                           {"vocab": self.core_size, "vocab_mode": self.vocab_mode})

    def memory_bytes(self) -> dict:
        from mlxspec.runtime.weights import param_bytes

        opt = sum(v.nbytes for v in self.trainer.optimizer_state().values())
        return {"buffer": self.buffer.nbytes, "optimizer": int(opt), "head": int(param_bytes(self.head))}
