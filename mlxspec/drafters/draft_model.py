"""The baseline drafter: a separate small model that shares the target's tokenizer."""
from __future__ import annotations

from typing import Optional

import numpy as np

from mlxspec.drafters.base import Drafter
from mlxspec.relaxed import draft_row
from mlxspec.runtime.target import TargetRunner
from mlxspec.sampling import SamplingParams, draft_pick, fit_vocab
from mlxspec.tree import DraftTree

DEFAULT_MIN_CONFIDENCE = 0.25  # stop drafting below this draft probability


class ModelDrafter(Drafter):
    name = "draft-model"
    greedy_q = False  # True: q rows in greedy decoding too (relaxed.request_draft_rows)

    def __init__(self, model, target_vocab_size: int, label: str = "draft-model",
                 min_confidence: float = DEFAULT_MIN_CONFIDENCE):
        self.model = model
        self.name = label
        self.vocab_size = target_vocab_size
        self.min_confidence = min_confidence
        self._runner: Optional[TargetRunner] = None
        self._seq: list[int] = []  # every token of the sequence
        self._cached: list[int] = []  # tokens whose KV is in the draft's cache

    def memory_bytes(self) -> int:
        from mlxspec.runtime.weights import param_bytes

        return param_bytes(self.model)

    # -- sequence bookkeeping --------------------------------------------------------
    def reset(self, tokens: list[int], runner=None) -> None:
        if self._runner is None:
            self._runner, self._cached = TargetRunner(self.model), []
        self._seq = [int(t) for t in tokens]

    def extend(self, tokens: list[int]) -> None:
        self._seq.extend(int(t) for t in tokens)

    def _sync(self) -> list[int]:
        """Rewind the draft cache to its longest prefix of the sequence (drafts that
        were not kept, or another branch of a tree); return the tokens still to feed,
        at least the last one."""
        keep = 0
        n = min(len(self._cached), len(self._seq) - 1)
        while keep < n and self._cached[keep] == self._seq[keep]:
            keep += 1
        self._runner.trim(len(self._cached) - keep)
        del self._cached[keep:]
        return self._seq[keep:]

    # -- drafting ---------------------------------------------------------------------
    def _logits(self, tokens: list[int]) -> np.ndarray:
        if len(tokens) > 1:
            out = self._runner.prefill(tokens)
        else:
            out = self._runner.forward(tokens, last_only=True)[-1]
        self._cached.extend(tokens)
        return fit_vocab(np.array(out), self.vocab_size)

    def propose(self, k: int, params: SamplingParams, rng: np.random.Generator, max_nodes=None) -> DraftTree:
        try:
            row = self._logits(self._sync())
            tokens: list[int] = []
            probs: list[Optional[np.ndarray]] = []
            context = list(self._seq)
            for i in range(k):
                tok, q, confidence = draft_pick(row, context, params, rng)
                if q is None and self.greedy_q:  # relaxed greedy verification blends q
                    q = draft_row(row, context, params)
                probs.append(q)
                tokens.append(tok)
                context.append(tok)
                if i == k - 1 or confidence < self.min_confidence:
                    break
                row = self._logits([tok])
        except BaseException:
            self._runner = None  # half-updated cache: rebuilt on the next reset
            raise
        return DraftTree.chain(tokens, probs)
