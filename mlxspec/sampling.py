"""Logit processing shared by the target (p) and every drafter (q).

Speculative sampling is exact only if p and q are built by the same rule, so both sides
call `probs_from_logits` / `greedy_token` here. Work is in float64 numpy on host: one
row is at most a few hundred thousand floats, and exact arithmetic keeps the rejection
rule honest.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np

from mlxspec.errors import InvalidParameterError

TINY = 1e-6  # smallest positive temperature / repetition penalty
_TOP_P_CANDIDATES = 4096  # sort only this many before falling back to a full sort


@dataclass(frozen=True)
class SamplingParams:
    temp: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: Optional[float] = None
    repetition_context_size: int = 64

    @property
    def greedy(self) -> bool:
        return self.temp == 0.0

    def validated(self) -> "SamplingParams":
        def number(x) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        if not number(self.temp):
            raise InvalidParameterError(f"temperature must be a finite number, got {self.temp!r}")
        if self.temp < 0:
            raise InvalidParameterError(f"temperature must be >= 0, got {self.temp!r}")
        if 0 < self.temp < TINY:  # dividing logits by a denormal overflows the sampler
            raise InvalidParameterError(f"temperature must be 0 (greedy) or at least {TINY:g}, got {self.temp!r}")
        if self.temp > 100:
            raise InvalidParameterError(f"temperature {self.temp} is absurd (use 0-2)")
        if not number(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise InvalidParameterError(f"top-p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise InvalidParameterError(f"top-k must be an integer >= 0, got {self.top_k!r}")
        rp = self.repetition_penalty
        if rp is not None and not number(rp):
            raise InvalidParameterError(f"repetition penalty must be a finite number, got {rp!r}")
        if rp is not None and rp < TINY:
            raise InvalidParameterError(f"repetition penalty must be at least {TINY:g}, got {rp!r}")
        if rp is not None and rp > 10.0:
            raise InvalidParameterError(f"repetition penalty must be at most 10, got {rp!r}")
        if isinstance(self.repetition_context_size, bool) or not isinstance(self.repetition_context_size, int) \
                or self.repetition_context_size < 1:
            raise InvalidParameterError("repetition context size must be an integer >= 1")
        return replace(self, temp=float(self.temp), top_p=float(self.top_p))


def penalize(logits: np.ndarray, context: Sequence[int], params: SamplingParams) -> np.ndarray:
    """CTRL-style repetition penalty over the last tokens of `context` (returns a copy)."""
    out = np.array(logits, dtype=np.float64)
    rp = params.repetition_penalty
    if rp is None or rp == 1.0 or not context:
        return out
    ids = np.unique(np.asarray(context[-params.repetition_context_size :], dtype=np.int64))
    ids = ids[ids < out.shape[0]]
    vals = out[ids]
    out[ids] = np.where(vals < 0, vals * rp, vals / rp)
    return out


def greedy_token(logits: np.ndarray, context: Sequence[int], params: SamplingParams) -> int:
    return int(np.argmax(penalize(logits, context, params)))


def _top_p_mask(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose mass reaches top_p."""
    n = probs.shape[0]
    cand = np.argpartition(probs, -_TOP_P_CANDIDATES)[-_TOP_P_CANDIDATES:] if n > _TOP_P_CANDIDATES else np.arange(n)
    order = cand[np.argsort(-probs[cand], kind="stable")]
    csum = np.cumsum(probs[order])
    if csum[-1] < top_p and order.shape[0] < n:
        order = np.argsort(-probs, kind="stable")
        csum = np.cumsum(probs[order])
    cut = int(np.searchsorted(csum, top_p)) + 1  # include the token that crosses top_p
    keep = np.zeros(n, dtype=bool)
    keep[order[:cut]] = True
    return keep


def probs_from_logits(logits: np.ndarray, context: Sequence[int], params: SamplingParams) -> np.ndarray:
    """The distribution to sample from at temp > 0: penalty, temperature, top-k, top-p."""
    x = penalize(logits, context, params) / params.temp
    if 0 < params.top_k < x.shape[0]:
        kth = np.partition(x, -params.top_k)[-params.top_k]
        x[x < kth] = -np.inf
    x -= np.max(x)
    probs = np.exp(x)
    probs /= probs.sum()
    if params.top_p < 1.0:
        probs = np.where(_top_p_mask(probs, params.top_p), probs, 0.0)
        probs /= probs.sum()
    return probs


def sample(probs: np.ndarray, rng: np.random.Generator) -> int:
    csum = np.cumsum(probs)
    idx = int(np.searchsorted(csum, rng.random() * csum[-1], side="right"))
    return min(idx, probs.shape[0] - 1)


def max_prob(logits: np.ndarray) -> float:
    """Confidence of a greedy pick: the softmax's largest probability."""
    x = np.asarray(logits, dtype=np.float64)
    return float(1.0 / np.exp(x - x.max()).sum())


def draft_pick(logits: np.ndarray, context: Sequence[int], params: SamplingParams,
               rng: np.random.Generator) -> tuple[int, Optional[np.ndarray], float]:
    """A drafter's next token from its full-vocabulary logits: (token, the processed
    distribution it was drawn from or None when greedy, the drafter's confidence)."""
    if params.greedy:
        return greedy_token(logits, context, params), None, max_prob(logits)
    q = probs_from_logits(logits, context, params)
    return sample(q, rng), q, float(q.max())


def fit_vocab(logits: np.ndarray, vocab_size: int) -> np.ndarray:
    """Cut or pad (with -inf) a drafter's logits to the target's vocabulary size; padded
    embedding rows differ between family members (Qwen's do)."""
    n = logits.shape[-1]
    if n == vocab_size:
        return logits
    if n > vocab_size:
        return logits[..., :vocab_size]
    pad = np.full(logits.shape[:-1] + (vocab_size - n,), -np.inf, dtype=logits.dtype)
    return np.concatenate([logits, pad], axis=-1)


def greedy_view(params: SamplingParams) -> SamplingParams:
    """The distributions greedy decoding blends: temperature 1, the same penalty."""
    return SamplingParams(temp=1.0, repetition_penalty=params.repetition_penalty,
                          repetition_context_size=params.repetition_context_size)
