"""How many tentative tokens the middle level gathers before a full verification, and
whether early-exit rounds beat single-level ones here; both from measurements.

With a per-position agreement a between the exit and the target (how often a tentative
token survives the full pass, decayed like the governor's acceptance), a full pass over
N tentative tokens emits E(N) = 1 + a + ... + a^(N-1) tokens. It costs N tentative
tokens (drafting and middle checks, measured seconds per token) plus one pass of the
upper layers over N positions (measured, scaled by the target's cost curve). N is the
length that maximises E(N) / cost(N).

The method choice is measured too: rounds of each kind keep a decayed tokens-per-second
rate; the faster one runs, the other is probed every _PROBE_EVERY rounds.
"""
from __future__ import annotations

from typing import Optional

_PRIOR_AGREE, _PRIOR_WEIGHT = 0.7, 2.0
_FORGET = 0.85  # weight of the past per full verification
_EMA = 0.3  # weight of a new cost measurement
_MIN_LEN, MAX_LEN = 2, 16
_WARM = 3  # rounds of each method measured before choosing
_PROBE_EVERY = 16


class _Rate:
    def __init__(self):
        self.tokens, self.seconds, self.n = 0.0, 0.0, 0

    def add(self, tokens: int, seconds: float) -> None:
        self.tokens = self.tokens * _FORGET + tokens
        self.seconds = self.seconds * _FORGET + seconds
        self.n += 1

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class ExitPolicy:
    def __init__(self, mid_share: float, max_len: int = MAX_LEN, adaptive: bool = True):
        self.mid_share = mid_share  # fraction of the target's layers the middle level runs
        self.max_len = max(_MIN_LEN, int(max_len))
        self.adaptive = adaptive
        self.prior = _PRIOR_AGREE  # the agreement expected before any full pass (a trained exit's, measured)
        self._kept = self._missed = 0.0
        self.tent_s: Optional[float] = None  # seconds per tentative token
        self.full_unit_s: Optional[float] = None  # full-pass seconds / cost ratio of its length
        self.early, self.single = _Rate(), _Rate()
        self._rounds = 0

    # -- the model -------------------------------------------------------------------
    @property
    def agreement(self) -> float:
        a = self.prior * _PRIOR_WEIGHT + self._kept
        return a / (_PRIOR_WEIGHT + self._kept + self._missed)

    def expected(self, n: int) -> float:
        a = self.agreement
        return sum(a ** i for i in range(n))

    def cost(self, n: int, cost_model, plain_s: float) -> float:
        tent = self.tent_s if self.tent_s is not None else 0.5 * self.mid_share * plain_s
        unit = self.full_unit_s if self.full_unit_s is not None else (1.0 - self.mid_share) * plain_s
        return n * tent + unit * cost_model.ratio(n)

    def length(self, cost_model, plain_s: Optional[float], fixed: int) -> int:
        """Tentative tokens per full verification (`fixed` when not adaptive)."""
        if not self.adaptive:
            return max(_MIN_LEN, min(self.max_len, fixed))
        plain_s = plain_s or 1.0
        return max(range(_MIN_LEN, self.max_len + 1),
                   key=lambda n: (self.expected(n) / self.cost(n, cost_model, plain_s), -n))

    # -- measurements ----------------------------------------------------------------
    def record_full(self, tentative: int, accepted: int, tent_seconds: float, full_seconds: float,
                    cost_model) -> None:
        self._kept = self._kept * _FORGET + accepted
        self._missed = self._missed * _FORGET + (1.0 if accepted < tentative else 0.0)
        per = tent_seconds / max(tentative, 1)
        unit = full_seconds / cost_model.ratio(tentative)
        self.tent_s = per if self.tent_s is None else (1 - _EMA) * self.tent_s + _EMA * per
        self.full_unit_s = unit if self.full_unit_s is None else (1 - _EMA) * self.full_unit_s + _EMA * unit

    def use_single_level(self) -> bool:
        """Whether the next round verifies in one level (the exact round) instead."""
        self._rounds += 1
        if not self.adaptive:
            return False
        if self.early.n < _WARM:
            return False
        if self.single.n < _WARM:
            return True
        probe = self._rounds % _PROBE_EVERY == 0
        faster_single = self.single.rate > self.early.rate
        return faster_single != probe
