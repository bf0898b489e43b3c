"""Adaptive draft length and the fall-back to plain decoding.

Draft length grows after a fully accepted round and shrinks after an early rejection
(unless the drafter sizes its drafts itself: then the length is only a cap).
Speculation pays only if tokens per second over rounds (every token a round emits,
copied and retrieved ones included) beats a plain single-token forward; both are
measured as they happen, and when speculation loses it is paused for a while (longer
each time it keeps losing), then probed again.
"""
from __future__ import annotations

from collections import deque
from typing import Optional

_MIN_ROUNDS = 6  # rounds measured before judging
_WINDOW = 8  # judged on the totals of the last rounds (>= _MIN_ROUNDS): one bad round is not a trend
_MARGIN = 0.95  # speculation must reach this fraction of the plain rate
_PAUSE_MIN, _PAUSE_MAX = 16, 256
_CALIBRATION_STEPS = 2


class Governor:
    def __init__(self, num_draft: int, max_draft: int, plain_step_s: Optional[float] = None, adaptive: bool = True,
                 shrink: bool = True):
        self.k = max(1, num_draft)
        self.max_k = max(self.k, max_draft)
        self.adaptive = adaptive
        self.shrink = shrink  # False: the draft length only grows (a drafter that sizes its own drafts)
        self.plain_step_s = plain_step_s  # typical recent single-token target forward
        self._plain_recent: deque = deque([plain_step_s] if plain_step_s else [], maxlen=_WINDOW)
        # (seconds, tokens) of the rounds since the last judgement that paused (up to _WINDOW)
        self._recent: deque = deque(maxlen=_WINDOW)
        self._pause_left = 0
        self._pause_len = _PAUSE_MIN
        # A timing carried over from an earlier call counts as calibrated.
        self._plain_samples = _CALIBRATION_STEPS if plain_step_s is not None else 0

    def new_call(self) -> None:
        """A new reply starts: what it learnt (draft length, how long a losing streak
        pauses) carries over, a pause left over from the last reply does not. That
        pause judged another text; a new prompt is judged on its own rounds."""
        self._pause_left = 0
        self._recent.clear()

    # -- measurements --------------------------------------------------------------
    def record_plain(self, seconds: float) -> None:
        self._plain_samples += 1
        if self._pause_left > 0:
            self._pause_left -= 1
        self._plain_recent.append(seconds)
        # The median of recent steps, as rounds are judged on their totals: one lucky
        # fast step no longer makes every round look slow (a running minimum did). With
        # fewer than 3 samples the first, cold step is left out by taking the minimum.
        recent = sorted(self._plain_recent)
        self.plain_step_s = recent[0] if len(recent) < 3 else recent[len(recent) // 2]

    def record_round(self, seconds: float, drafted: int, accepted: int, produced: Optional[int] = None) -> None:
        """A verified round: `drafted` and `accepted` count the drafter's own guesses
        (they size the next draft); `produced` is every token the round emitted, tokens
        kept from retrieved branches included (the rate is judged on it). Default: the
        accepted guesses plus the target's token."""
        self._recent.append((seconds, accepted + 1 if produced is None else produced))
        if self.adaptive and drafted > 0:
            if accepted == drafted and drafted >= self.k:
                self.k = min(self.k + 1, self.max_k)
            elif self.shrink and accepted < drafted // 2:
                self.k = max(1, self.k - 1)
        self._judge()

    def _judge(self) -> None:
        if not self.adaptive or self.plain_step_s is None or len(self._recent) < _MIN_ROUNDS:
            return
        spec_rate = sum(t for _, t in self._recent) / max(sum(s for s, _ in self._recent), 1e-9)
        plain_rate = 1.0 / self.plain_step_s
        if spec_rate < _MARGIN * plain_rate:
            self._pause_left = self._pause_len
            self._pause_len = min(2 * self._pause_len, _PAUSE_MAX)
            self._recent.clear()
        else:
            self._pause_len = _PAUSE_MIN

    # -- decisions -----------------------------------------------------------------
    @property
    def needs_plain_sample(self) -> bool:
        """Too few plain-step timings (the first forward after prefill runs cold)."""
        return self.adaptive and (self.plain_step_s is None or self._plain_samples < _CALIBRATION_STEPS)

    @property
    def paused(self) -> bool:
        return self._pause_left > 0

    def use_speculation(self) -> bool:
        return not (self.needs_plain_sample or self.paused)
