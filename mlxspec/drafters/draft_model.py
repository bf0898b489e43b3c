"""The baseline drafter: a separate small model that shares the target's tokenizer."""
from __future__ import annotations

from typing import Optional

import numpy as np

from mlxspec.drafters.base import Draft, Drafter
from mlxspec.sampling import SamplingParams, draft_pick, fit_vocab
from mlxspec.runtime.target import TargetRunner

DEFAULT_MIN_CONFIDENCE = 0.25  # stop drafting below this draft probability


class ModelDrafter(Drafter):
    name = "draft-model"

    def __init__(self, model, target_vocab_size: int, label: str = "draft-model",
                 min_confidence: float = DEFAULT_MIN_CONFIDENCE):
        self.model = model
        self.name = label
        self.vocab_size = target_vocab_size
        self.min_confidence = min_confidence
        self._runner: Optional[TargetRunner] = None
        self._seq: list[int] = []  # every token of the sequence
        self._cached: list[int] = []  # tokens whose KV is in the draft cache
        self._last: list[int] = []

    def memory_bytes(self) -> int:
        from mlx.utils import tree_flatten

        return sum(v.nbytes for _, v in tree_flatten(self.model.parameters()))

    # -- sequence bookkeeping --------------------------------------------------------
    def reset(self, prompt: list[int], target) -> None:
        if self._runner is None:
            self._runner, self._cached = TargetRunner(self.model), []
        keep = 0
        while keep < min(len(self._cached), len(prompt) - 1) and self._cached[keep] == prompt[keep]:
            keep += 1
        self._runner.trim(self._runner.length - keep)
        self._cached = self._cached[:keep]
        self._seq = list(prompt)
        self._last = []

    def extend(self, tokens: list[int]) -> None:
        self._seq.extend(tokens)

    def commit(self, num_accepted: int, next_token: int) -> None:
        drafted = self._last
        # The cache holds seq + drafted[:-1]; keep seq + drafted[:num_accepted].
        fed = len(drafted) - 1
        if num_accepted < fed:
            self._runner.trim(fed - num_accepted)
            self._cached = self._cached[: len(self._cached) - (fed - num_accepted)]
        self._seq.extend(drafted[:num_accepted])
        self._seq.append(next_token)
        self._last = []

    # -- drafting ---------------------------------------------------------------------
    def _logits(self, tokens: list[int]) -> np.ndarray:
        if len(tokens) > 1:
            out = self._runner.prefill(tokens)
        else:
            out = self._runner.forward(tokens, last_only=True)[-1]
        self._cached.extend(tokens)
        return fit_vocab(np.array(out), self.vocab_size)

    def propose(self, k: int, params: SamplingParams, rng: np.random.Generator) -> Draft:
        pending = self._seq[len(self._cached):]
        if not pending:  # the whole sequence is cached: re-feed the last token
            self._runner.trim(1)
            self._cached.pop()
            pending = self._seq[-1:]
        try:
            row = self._logits(pending)
            tokens: list[int] = []
            probs: list[np.ndarray] = []
            context = list(self._seq)
            for i in range(k):
                tok, q, confidence = draft_pick(row, context, params, rng)
                if q is not None:
                    probs.append(q)
                tokens.append(tok)
                context.append(tok)
                if i == k - 1 or confidence < self.min_confidence:
                    break
                row = self._logits([tok])
        except BaseException:
            self._runner = None  # half-updated cache: rebuild on the next reset
            raise
        self._last = tokens
        return Draft(tokens=tokens, probs=np.stack(probs) if probs else None)
