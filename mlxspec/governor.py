"""When to speculate and how far: one rule for every drafter, from measured costs.

The cost model is the time of one target forward of n tokens relative to one token,
measured on the machine it runs on (costs.py). With a per-position acceptance estimate
a (how often a drafted position survives verification, measured round by round and
forgetting old rounds) a draft of depth k is expected to emit E(k) = 1 + a + ... + a^k
tokens for c(k + 1) target steps plus k draft steps of measured cost d (until measured,
what another governor of the engine measured, else the drafter's own guess: a draft
model's bytes over the target's; first_draft_cost). The next draft
gets the depth that maximises E(k) / (c(k + 1) + k d); when even that does not beat a
plain step, the next step is plain. Where n tokens cost n times one (quantized matmuls
on a CPU) no draft can win and speculation never starts.

A drafter that stops early by its own confidence drafts only positions likely to be
kept, so its measured a is higher and its depth cap longer: no special case.

A drafter with copied branches (lookup, the reply store) beside its own guesses is asked
each round which pays more: a draft of the copies alone (no draft step, judged on how
copies did) or its own k-deep draft with the copies merged in (k draft steps, a wider
verification); the faster by the same model wins, so a long, trusted copy skips the
draft model's steps. In greedy decoding the two are measured apart in every round that
verifies both (steps.py): the drafter's own guesses on its own tree, the copies on the
longest copy, so neither is credited with what the other got right.

Behind the model, a measured check: over its last rounds speculation must keep up with
a plain step (every token a round emitted counted); when it does not it is paused for a
while (longer each time it keeps losing), then probed again. Rounds of copies alone are
judged and paused apart from the drafter's own, so copies that lose do not stop a draft
model that pays, nor the reverse. While speculation is not used (plain steps, or rounds
of copies alone) the acceptance estimate of the drafter's own guesses relaxes towards
its prior, so a changed text is probed; at a new reply what earlier replies taught
weighs little, so the reply's own first rounds set its depth.
"""
from __future__ import annotations

from collections import deque
from typing import Optional

from mlxspec.costs import CostModel

_MIN_ROUNDS = 6  # rounds measured before judging the measured rate
_WINDOW = 8  # judged on the totals of the last rounds (>= _MIN_ROUNDS): one bad round is not a trend
_MARGIN = 0.97  # speculation must reach this fraction of the plain rate
_PAUSE_MIN, _PAUSE_MAX = 16, 256
_PRIOR_ACCEPT, _PRIOR_WEIGHT = 0.7, 2.0  # optimistic enough to try a new drafter
_FORGET_ROUND = 0.85  # weight of the past per verified round
_FORGET_PLAIN = 0.97  # ... per plain step (drifts back to the prior: a probe)
_DRAFT_COST_PRIOR = 0.05  # draft step / target step, until measured (or hinted by the drafter)
_FIRST_COST_MAX = 0.5  # a drafter's own estimate is capped here so a first draft is still tried and timed
_HINT_WEIGHT = 8.0  # a drafter's own estimate counts as this many measured rounds
_NEW_TEXT_WEIGHT = 4.0  # at a new reply, earlier replies count as at most this many positions


class Governor:
    def __init__(self, max_draft: int, cost: Optional[CostModel] = None, plain_step_s: Optional[float] = None,
                 adaptive: bool = True, draft_cost: Optional[float] = None):
        self.max_k = max(1, int(max_draft))
        self.cost = cost or CostModel.default()
        self.adaptive = adaptive
        self.plain_step_s = plain_step_s or None  # typical recent single-token target forward
        self._plain_recent: deque = deque([plain_step_s] if plain_step_s else [], maxlen=_WINDOW)
        self._kept = 0.0  # decayed counts of drafted positions kept / first rejections
        self._missed = 0.0
        self._free = [0.0, 0.0]  # the same for drafts of copied tokens alone (free rounds)
        self.draft_cost = _DRAFT_COST_PRIOR if draft_cost is None else max(float(draft_cost), 0.0)
        self.draft_cost_measured = False  # a round with draft steps was timed
        self._own_check, self._free_check = _Check(), _Check()  # rounds with the drafter's guesses / copies alone
        self.k = self._best_depth()[0] if adaptive else self.max_k

    def new_call(self) -> None:
        """A new reply starts: what was learnt (acceptance, costs, how long a losing
        streak pauses) carries over; a pause left from the last reply does not, as it
        judged another text. The acceptance learnt on earlier replies is kept but
        weighs little, so this reply's first rounds decide (code then sampled prose
        would otherwise draft long chains into a text that rejects them)."""
        self._own_check.new_text()
        self._free_check.new_text()
        self._kept, self._missed = _lighter(self._kept, self._missed)
        self._free = list(_lighter(*self._free))
        self._resize()

    def hint(self, acceptance: float, weight: float = _HINT_WEIGHT) -> None:
        """The drafter's own estimate of its acceptance (a learning head's held-out
        agreement with the target) replaces what was measured of it: the head changed
        since, and rounds it was not given cannot show that it improved."""
        a = min(max(float(acceptance), 0.0), 1.0)
        self._kept, self._missed = a * weight, (1.0 - a) * weight
        self._resize()

    # -- the model -------------------------------------------------------------------
    @property
    def acceptance(self) -> float:
        return _estimate(self._kept, self._missed)

    @property
    def free_acceptance(self) -> float:
        return _estimate(*self._free)

    def expected_tokens(self, depth: int, free: bool = False) -> float:
        a = self.free_acceptance if free else self.acceptance
        return sum(a ** i for i in range(depth + 1))

    def _best_depth(self) -> tuple[int, float]:
        """(depth, expected speed-up over plain) of the best draft depth."""
        best, gain = 0, 1.0
        for k in range(1, self.max_k + 1):
            g = self.expected_tokens(k) / (self.cost.ratio(k + 1) + k * self.draft_cost)
            if g > gain:
                best, gain = k, g
        return best, gain

    def worth_verifying(self, nodes: int, depth: int, free: bool = False) -> bool:
        """Whether a draft already made (its drafting cost spent) is expected to beat a
        plain step: free drafts (copied tokens) are judged here. `free`: a draft of the
        branches alone, offered when plan() said the drafter's own guesses do not pay,
        judged on how such drafts did (free_acceptance)."""
        if not self.adaptive:
            return nodes > 0
        return nodes > 0 and self.expected_tokens(depth, free) > self.cost.ratio(nodes + 1)

    def copies_pay_more(self, copy_depth: int, k: int) -> bool:
        """Whether a draft of copied tokens alone, `copy_depth` deep, is expected to emit
        faster than the drafter's own k-deep draft with the copies merged in (which pays
        k draft steps and verifies both)."""
        if not self.adaptive or copy_depth <= 0:
            return False
        free = self.expected_tokens(copy_depth, free=True)
        both = max(free, self.expected_tokens(k))
        return free / self.cost.ratio(copy_depth + 1) >= \
            both / (self.cost.ratio(k + copy_depth + 1) + k * self.draft_cost)

    @property
    def free_drafts_allowed(self) -> bool:
        """Copies may be offered (alone) unless rounds of copies alone are paused for
        measured losses."""
        return self.adaptive and self.plain_step_s is not None and not self._free_check.paused

    # -- measurements --------------------------------------------------------------
    def record_plain(self, seconds: float) -> None:
        self._own_check.tick(1)
        self._free_check.tick(1)
        self._relax_own(_FORGET_PLAIN)
        self._free = [v * _FORGET_PLAIN for v in self._free]
        self._plain_recent.append(seconds)
        # The median of recent steps: one lucky fast step must not make every round look
        # slow. With fewer than 3 samples the first, cold step is left out (minimum).
        recent = sorted(self._plain_recent)
        self.plain_step_s = recent[0] if len(recent) < 3 else recent[len(recent) // 2]
        self._resize()

    def record_round(self, seconds: float, depth: int, kept: int, emitted: int,
                     draft_seconds: float = 0.0, guessed: int = 0, free: bool = False,
                     catch_up_seconds: float = 0.0) -> None:
        """A verified round: a draft `depth` deep whose kept path is `kept` long emitted
        `emitted` tokens in `seconds`, of which `draft_seconds` drafting `guessed`
        tokens that cost a draft step (`free`: a draft of the branches alone). Of the
        drafting, `catch_up_seconds` fed the drafter what plain steps emitted: counted
        in the round's time, not in the cost of a draft step."""
        mine, other = (self._free_check, self._own_check) if free else (self._own_check, self._free_check)
        other.tick(emitted)  # a pause lasts so many tokens, whatever emitted them
        mine.recent.append((seconds, emitted))
        missed = 1.0 if kept < depth else 0.0
        if free:
            self._fold_free(kept, missed)
            # the drafter's own guesses sat this round out: relax them as plain steps
            # do, so a drafter priced out by one text is probed again on the next
            self._relax_own(_FORGET_PLAIN ** emitted)
        else:
            self._kept = self._kept * _FORGET_ROUND + kept
            self._missed = self._missed * _FORGET_ROUND + missed
        if guessed > 0 and self.plain_step_s:
            per = max(draft_seconds - catch_up_seconds, 0.0) / guessed / self.plain_step_s
            self.draft_cost = 0.7 * self.draft_cost + 0.3 * per
            self.draft_cost_measured = True
        if self.adaptive and self.plain_step_s is not None:
            mine.judge(self.plain_step_s)
        self._resize()

    def record_copy(self, depth: int, kept: int, known: int) -> None:
        """A copied branch `depth` long, verified beside the drafter's own draft, held
        the first `kept` of the `known` tokens the target gave: measured like a draft of
        copies alone (a branch longer than what is known is not counted as missed)."""
        self._fold_free(kept, 1.0 if kept < min(depth, known) else 0.0)

    def _relax_own(self, factor: float) -> None:
        """Forget part of what was measured of the drafter's own guesses (towards the prior)."""
        self._kept *= factor
        self._missed *= factor

    def _fold_free(self, kept: float, missed: float) -> None:
        self._free = [self._free[0] * _FORGET_ROUND + kept, self._free[1] * _FORGET_ROUND + missed]

    def set_costs(self, cost: CostModel, plain_step_s: Optional[float] = None) -> None:
        """The measured cost curve (and a one-token step's seconds, if nothing was
        measured here yet)."""
        self.cost = cost
        if self.plain_step_s is None and plain_step_s:
            self.record_plain(plain_step_s)
        self._resize()

    def _resize(self) -> None:
        if self.adaptive:
            self.k = self._best_depth()[0]

    # -- decisions -----------------------------------------------------------------
    @property
    def paused(self) -> bool:
        """Speculation with the drafter's own guesses is paused for measured losses."""
        return self._own_check.paused

    def plan(self) -> int:
        """Depth cap of the next draft; 0: take a plain step."""
        if not self.adaptive:
            return self.max_k
        if self.plain_step_s is None or self.paused:
            return 0
        return self.k


def first_draft_cost(others, drafter, target) -> Optional[float]:
    """A new governor's first estimate of a draft step's cost, in target steps: what
    another governor of the engine measured (the same drafter at another length or in
    the other mode), else the drafter's own estimate (capped: a guess must not stop the
    governor from ever timing a step), else None (the prior)."""
    measured = [g.draft_cost for g in others if g.draft_cost_measured]
    if measured:
        return measured[-1]
    if drafter is None:
        return None
    from mlxspec.runtime.weights import param_bytes

    hint = drafter.step_cost_hint(param_bytes(target))
    return None if hint is None else min(hint, _FIRST_COST_MAX)


class _Check:
    """The measured check of one kind of round: its recent rounds against a plain step,
    and the pause (in tokens) it earns when it loses."""

    def __init__(self):
        self.recent: deque = deque(maxlen=_WINDOW)  # (seconds, tokens) of recent rounds
        self.pause_left = 0
        self.pause_len = _PAUSE_MIN

    @property
    def paused(self) -> bool:
        return self.pause_left > 0

    def tick(self, tokens: int) -> None:
        self.pause_left = max(0, self.pause_left - tokens)

    def new_text(self) -> None:
        """A pause judged another text; how long the next one lasts carries over."""
        self.pause_left = 0
        self.recent.clear()

    def judge(self, plain_step_s: float) -> None:
        if len(self.recent) < _MIN_ROUNDS:
            return
        rate = sum(t for _, t in self.recent) / max(sum(s for s, _ in self.recent), 1e-9)
        if rate < _MARGIN / plain_step_s:
            self.pause_left = self.pause_len
            self.pause_len = min(2 * self.pause_len, _PAUSE_MAX)
            self.recent.clear()
        else:
            self.pause_len = _PAUSE_MIN


def _lighter(kept: float, missed: float) -> tuple[float, float]:
    """The same estimate from at most _NEW_TEXT_WEIGHT positions of evidence."""
    total = kept + missed
    if total <= _NEW_TEXT_WEIGHT:
        return kept, missed
    return kept * _NEW_TEXT_WEIGHT / total, missed * _NEW_TEXT_WEIGHT / total


def _estimate(kept: float, missed: float) -> float:
    """Per-position acceptance from decayed counts, drawn towards an optimistic prior."""
    return (_PRIOR_ACCEPT * _PRIOR_WEIGHT + kept) / (_PRIOR_WEIGHT + kept + missed)
