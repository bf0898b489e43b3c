"""The governor: one rule for every drafter. Drafts are sized from a measured cost model
and a measured acceptance; speculation pauses when it is measured to lose against plain
decoding; the engine keeps what it learnt across calls."""
import json

import pytest

from mlxspec import costs
from mlxspec.costs import CostModel
from mlxspec.drafters.base import Drafter
from mlxspec.drafters.draft_model import ModelDrafter
from mlxspec.engine import Engine
from mlxspec.governor import _MIN_ROUNDS, _PAUSE_MIN, Governor
from mlxspec.runtime.target import TargetRunner
from mlxspec.sampling import SamplingParams
from mlxspec.tree import DraftTree
from tiny import CharTokenizer, tiny_model

V = 64
CPU_FLOAT = CostModel({1: 1.0, 2: 1.15, 4: 1.2, 8: 1.35, 12: 1.5})  # measured shape, 1.5B float32 here
CPU_QUANT = CostModel({1: 1.0, 2: 2.0, 4: 4.0, 8: 8.0})  # 4-bit on this CPU: n tokens cost n


def calibrated(plain_s=0.1, k=10, cost=CPU_FLOAT):
    gov = Governor(k, cost)
    gov.record_plain(plain_s)
    assert gov.plan() > 0
    return gov


def test_losing_speculation_pauses_then_is_probed_again_with_a_longer_pause():
    gov = calibrated(0.1)
    for _ in range(_MIN_ROUNDS):  # 3 tokens per 0.5 s round vs 10 tokens/s plain
        gov.record_round(0.5, 4, 2, 3)
    assert gov.paused and gov.plan() == 0
    for _ in range(_PAUSE_MIN):
        assert gov.plan() == 0
        gov.record_plain(0.1)
    assert gov.plan() > 0  # probed again
    for _ in range(_MIN_ROUNDS):
        gov.record_round(0.5, 4, 2, 3)
    for _ in range(_PAUSE_MIN):
        gov.record_plain(0.1)
    assert gov.paused  # the second pause is longer


def test_winning_speculation_keeps_going():
    gov = calibrated(0.1)
    for _ in range(4 * _MIN_ROUNDS):  # 4 tokens per 0.15 s round
        gov.record_round(0.15, 4, 3, 4)
        assert gov.plan() > 0


def test_one_slow_round_among_fast_ones_does_not_pause():
    gov = calibrated(0.1)  # plain: 10 tokens/s
    gov.record_round(1.0, 4, 4, 5)  # a cold first round: 5 tokens/s
    for _ in range(_MIN_ROUNDS + 4):  # then 4 tokens per 0.15 s round
        gov.record_round(0.15, 4, 3, 4)
        assert gov.plan() > 0


def test_one_lucky_fast_plain_step_does_not_pause_winning_speculation():
    gov = calibrated(0.1)
    for seconds in (0.1, 0.1, 0.02):  # one step 5x faster than the rest (timer noise)
        gov.record_plain(seconds)
    assert abs(gov.plain_step_s - 0.1) < 1e-9
    for _ in range(_MIN_ROUNDS + 2):  # 2 tokens per 0.15 s round: 13 tokens/s, a win
        gov.record_round(0.15, 4, 1, 2)
        assert gov.plan() > 0


def test_where_n_tokens_cost_n_times_one_speculation_never_starts():
    """Quantized matmuls on this CPU: no acceptance can pay for a longer forward."""
    gov = Governor(10, CPU_QUANT)
    gov.record_plain(0.1)
    assert gov.plan() == 0
    gov._kept, gov._missed = 1000.0, 0.0  # even a drafter that is always right
    gov._resize()
    assert gov.plan() == 0
    assert not gov.worth_verifying(3, 3)  # free copied drafts are not verified either


def test_draft_depth_follows_measured_acceptance_and_draft_cost():
    depths = []
    for kept, missed in ((0.0, 8.0), (6.0, 6.0), (20.0, 4.0), (60.0, 3.0)):
        gov = calibrated(0.1, k=64)
        gov._kept, gov._missed = kept, missed
        gov._resize()
        depths.append(gov.plan())
    assert depths[0] == 0 and depths[1] < depths[2] < depths[3]
    # an expensive drafter (a draft step costs half a target step) needs more acceptance
    gov = calibrated(0.1)
    gov._kept, gov._missed = 6.0, 6.0
    cheap = (gov._resize(), gov.plan())[1]
    gov.draft_cost = 0.5
    gov._resize()
    assert gov.plan() < cheap


def test_acceptance_is_learnt_from_rounds_and_forgotten_in_plain_steps():
    gov = calibrated(0.1)
    prior = gov.acceptance
    for _ in range(6):
        gov.record_round(0.2, 4, 0, 1)  # every draft rejected at once
    assert gov.acceptance < 0.3 and gov.plan() == 0
    for _ in range(200):  # a long plain stretch: the text may have changed
        gov.record_plain(0.1)
    assert gov.acceptance > 0.6 * prior and gov.plan() > 0  # probed again


def test_own_guesses_are_probed_again_after_rounds_of_copies_alone():
    # A composed drafter priced out by one text drafts its copies alone from then on;
    # those rounds say nothing of its own guesses, which must relax as in plain steps,
    # or the draft model is never tried again (found by a 3-repetition bench).
    gov = calibrated(0.1)
    for _ in range(20):
        gov.record_round(0.1, 4, 0, 1)  # rejected at once, but no slower than plain: no pause
    assert gov.plan() == 0 and not gov.paused
    low = gov.acceptance
    for _ in range(50):  # copies alone, 4 tokens a round
        gov.record_round(0.12, 4, 3, 4, free=True)
    assert gov.acceptance > low + 0.2 and gov.plan() > 0


def test_a_new_reply_is_judged_on_its_own_first_rounds():
    # Code accepted for a long while, then a reply that rejects everything (sampled
    # prose): two rejected rounds must bring the depth down, or long chains keep being
    # drafted into it. The control keeps the earlier replies' full weight.
    def after_two_misses(new_text: bool) -> int:
        gov = calibrated(0.1)
        for _ in range(40):  # a draft step costing a third of a target step, as the 0.5B's
            gov.record_round(0.35, 7, 7, 8, draft_seconds=0.23, guessed=7)
        deep = gov.plan()
        if new_text:
            gov.new_call()
        assert gov.plan() >= 3 and deep >= 5
        for _ in range(2):
            k = gov.plan()
            gov.record_round(0.12 + 0.033 * k, k, 0, 1, draft_seconds=0.033 * k, guessed=k)
        return gov.plan()

    assert after_two_misses(True) <= 2
    assert after_two_misses(False) >= 5  # the control: the old reply's weight holds the depth up


def test_draft_cost_is_measured():
    gov = calibrated(0.1)
    for _ in range(10):
        gov.record_round(0.4, 3, 3, 4, draft_seconds=0.12, guessed=3)  # 0.04 s per guess
    assert gov.draft_cost == pytest.approx(0.4, rel=0.05)


def test_a_draft_model_catching_up_is_not_a_draft_steps_cost():
    """A round after plain steps spends part of its drafting feeding the draft model
    what the plain steps emitted: the round's time holds it, the cost of a draft step
    does not (control: counted as drafting, it doubles the measured step)."""
    gov, control = calibrated(0.1), calibrated(0.1)
    for _ in range(10):
        gov.record_round(0.52, 3, 3, 4, draft_seconds=0.24, guessed=3, catch_up_seconds=0.12)
        control.record_round(0.52, 3, 3, 4, draft_seconds=0.24, guessed=3)
    assert gov.draft_cost == pytest.approx(0.4, rel=0.05)
    assert control.draft_cost == pytest.approx(0.8, rel=0.05)


def test_the_draft_model_feeds_plain_steps_tokens_apart_and_drafts_the_same():
    model = tiny_model(V, layers=2, hidden=32, seed=0, scale=3.0)
    params, rng = SamplingParams(), None
    d = ModelDrafter(model, V, min_confidence=0.0)
    d.reset([1, 2, 3], None)
    first = d.propose(3, params, rng).tokens
    assert d.last_catch_up_s() == 0.0  # the prompt was fed at reset
    d.accept(first[:1], 9)
    d.propose(2, params, rng)
    assert d.last_catch_up_s() == 0.0  # a round's kept tokens and the target's: a draft step
    d.extend([4, 5, 6, 7])  # plain steps
    got = d.propose(3, params, rng).tokens
    assert d.last_catch_up_s() > 0.0
    fresh = ModelDrafter(model, V, min_confidence=0.0)
    fresh.reset([1, 2, 3, first[0], 9, 4, 5, 6, 7], None)
    assert got == fresh.propose(3, params, rng).tokens


def test_costs_are_measured_at_every_size_and_cached(tmp_path):
    model = tiny_model(V, layers=2, hidden=32, seed=0)
    runner = TargetRunner(model)
    runner.prefill([1, 2, 3])
    cm, one = costs.measure(runner, 4)
    assert runner.length == 3 and one > 0  # every measurement was trimmed again
    assert [n for n, _ in cm.points] == list(range(1, costs.MAX_SIZE + 1)) and cm.points[0] == (1, 1.0)
    paid = [r for _, r in cm.effective().points]  # what a padding runner pays rises with n
    assert all(p <= r for p, (_, r) in zip(paid, cm.points))
    assert all(a <= b * costs._PAD_NOISE for i, a in enumerate(paid) for b in paid[i:])
    path = tmp_path / "costs.json"
    costs.remember("cpu|float32", cm, path)
    costs._MEMORY.clear()
    again = costs.cached("cpu|float32", path)
    stored = json.loads(path.read_text())[f"{costs.MEASURED_BY}|cpu|float32"]
    assert again is not None and again.points == CostModel(stored).points
    assert costs.cached("gpu|q4", path) is None
    # curves cached by older measurements (one timing; a few sizes) are measured again
    path.write_text(json.dumps({"cpu|float32": {"1": 1.0, "4": 2.84}, "v2|cpu|float32": {"1": 1.0, "8": 1.28}}))
    costs._MEMORY.clear()
    assert costs.cached("cpu|float32", path) is None
    path.write_text("{not json")
    costs._MEMORY.clear()
    assert costs.cached("cpu|float32", path) is None  # a damaged cache is measured again


def test_a_busy_moment_does_not_stay_in_the_curve(monkeypatch):
    """One slow forward (another process took the cores) is not the measured cost: each
    size is timed REPEATS times, interleaved, and the fastest kept."""
    import time

    model = tiny_model(V, layers=2, hidden=32, seed=0)
    runner = TargetRunner(model)
    runner.prefill([1, 2, 3])
    forward, slowed = runner.forward, []

    def busy(tokens, *a, **kw):
        if len(tokens) == 4 and not slowed:
            slowed.append(1)
            time.sleep(0.3)
        return forward(tokens, *a, **kw)

    monkeypatch.setattr(runner, "forward", busy)
    cm, one = costs.measure(runner, 4)
    assert slowed and cm.ratio(4) < 0.3 / one / 2, (cm.ratio(4), one)


def test_cost_model_interpolates_and_extrapolates():
    cm = CostModel({1: 1.0, 2: 1.2, 4: 1.4})
    assert cm.ratio(1) == 1.0 and cm.ratio(3) == pytest.approx(1.3) and cm.ratio(6) == pytest.approx(1.6)


def test_a_pause_ends_with_its_reply_but_its_length_carries_over():
    from mlxspec.drafters.lookup import LookupDrafter

    target = tiny_model(V, layers=2, hidden=48, seed=3)
    engine = Engine(target, CharTokenizer(V), LookupDrafter(), num_draft=4, draft_name="lookup")
    engine.cost = CPU_FLOAT  # as if measured on a machine where speculation pays
    prompt = [1, 2, 3, 4] * 3
    first = list(engine.stream(prompt, SamplingParams(), max_tokens=12))
    assert first[-1].stats.rounds > 0  # free copied drafts: speculation runs
    (gov,) = engine._governors.values()
    gov._pause_left, gov._pause_len = 1000, 64  # as if it had been measured to lose twice
    second = list(engine.stream(prompt + [5], SamplingParams(), max_tokens=12))
    # The new reply is judged on its own rounds: it drafts from the start.
    assert second[-1].stats.rounds > 0 and not second[-1].stats.fallback
    assert gov._pause_len == 64  # a losing streak still pauses longer next time
    assert [r.token for r in second] == [r.token for r in Engine(target, CharTokenizer(V)).stream(
        prompt + [5], SamplingParams(), max_tokens=12)]


class CopyStub(Drafter):
    """Right tokens copied from `ref` (the target's greedy reply) after the drafter's own
    guesses. Chain: `own` right guesses, then copies; tree: `own` wrong guesses in a
    chain beside a copied branch."""

    def __init__(self, ref, tree, own=1, copied=3):
        self.ref, self.tree, self.own, self.copied = ref, tree, own, copied

    def reset(self, tokens, runner):
        self.done = len(tokens) - self.start

    def extend(self, tokens):
        self.done += len(tokens)

    def propose(self, k, params, rng, max_nodes=None):
        right = self.ref[self.done: self.done + self.own + self.copied]
        if not self.tree:
            return DraftTree.chain(right, guessed=self.own)
        wrong = [(t + 1) % V for t in right[: self.own]]
        copied = [-1] + [self.own + i for i in range(len(right) - 1)]
        return DraftTree(wrong + right, list(range(-1, self.own - 1)) + copied, guessed=self.own)


def greedy_reply(target, prompt, n=16):
    return [r.token for r in Engine(target, CharTokenizer(V)).stream(prompt, SamplingParams(), max_tokens=n)]


@pytest.mark.parametrize("tree", [False, True])
def test_every_token_a_round_emits_counts_for_the_rate(tree, monkeypatch):
    """A round is judged on every token it emitted, copied ones included: a drafter
    whose own guess is short or wrong but whose copied tokens are right produces
    several tokens per round."""
    target = tiny_model(V, layers=2, hidden=32, seed=3, scale=3.0)
    prompt = [1, 2, 3, 4]
    ref = greedy_reply(target, prompt)
    seen = []
    record = Governor.record_round

    def spy(self, seconds, depth, kept, emitted, *a, **kw):
        seen.append(emitted)
        record(self, seconds, depth, kept, emitted, *a, **kw)

    monkeypatch.setattr(Governor, "record_round", spy)
    stub = CopyStub(ref, tree)
    stub.start = len(prompt)
    engine = Engine(target, CharTokenizer(V), stub, num_draft=4, draft_name="stub")
    engine.cost = CPU_FLOAT
    out = list(engine.stream(prompt, SamplingParams(), max_tokens=16))
    stats = out[-1].stats
    assert [r.token for r in out] == ref
    assert stats.rounds == len(seen) > 0 and stats.accepted > 0
    assert sum(seen) == stats.accepted + stats.rounds


def test_a_drafters_hint_replaces_what_was_measured_of_it():
    """A learning head the governor stopped using gets rounds again when its own held-out
    estimate rises (rounds it was not given cannot show that it improved), and a low
    estimate stops it."""
    gov = calibrated(0.1)
    for _ in range(12):
        gov.record_round(0.1, 4, 0, 1)  # every draft rejected at once (no slower than plain: no pause)
    assert not gov.paused and gov.plan() == 0
    gov.hint(0.9)
    assert gov.plan() >= 2
    gov.hint(0.0)
    assert gov.plan() == 0


class HintStub(Drafter):
    """Drafts nothing useful; reports a new acceptance estimate before every reply."""

    def __init__(self, hints):
        self.hints = list(hints)

    def reset(self, tokens, runner):
        pass

    def extend(self, tokens):
        pass

    def accept(self, kept, nxt):
        pass

    def propose(self, k, params, rng, max_nodes=None):
        return DraftTree.chain([0] * k, guessed=k)

    def acceptance_hint(self):
        return self.hints.pop(0) if self.hints else None


def test_the_engine_passes_a_drafters_hint_to_the_governor():
    target = tiny_model(V, layers=2, hidden=32, seed=3)
    engine = Engine(target, CharTokenizer(V), HintStub([0.0, 0.95]), num_draft=4, draft_name="stub")
    engine.cost, engine.plain_step_s = CPU_FLOAT, 0.1
    first = list(engine.stream([1, 2, 3], SamplingParams(), max_tokens=6))
    assert first[-1].stats.rounds == 0  # hint 0: no rounds
    (gov,) = engine._governors.values()
    assert gov.acceptance < 0.5
    list(engine.stream([1, 2, 3, 4], SamplingParams(), max_tokens=2))
    assert gov.acceptance > 0.8  # before its first round: the hint


@pytest.mark.parametrize("free", [True, False])
def test_copies_are_still_verified_while_the_drafters_own_guesses_do_not_pay(free, monkeypatch):
    """A head that does not pay (its hint says 0) must not stop its lookup branches: the
    engine offers the copies alone and judges them on how copies did. Control: without
    that path no round runs at all."""
    from mlxspec.drafters.compose import Composite
    from mlxspec.drafters.lookup import LookupDrafter

    if not free:
        monkeypatch.setattr(Composite, "has_free_branches", property(lambda self: False))
    target = tiny_model(V, layers=2, hidden=48, seed=3)
    prompt = [1, 2, 3, 4] * 3
    drafter = Composite(HintStub([0.0]), [LookupDrafter()])
    engine = Engine(target, CharTokenizer(V), drafter, num_draft=4, draft_name="stub+lookup")
    engine.cost, engine.plain_step_s = CPU_FLOAT, 0.1
    out = list(engine.stream(prompt, SamplingParams(), max_tokens=16))
    assert [r.token for r in out] == greedy_reply(target, prompt)
    (gov,) = engine._governors.values()
    if free:
        assert out[-1].stats.rounds > 0 and gov.acceptance < 0.5 and gov.free_acceptance != gov.acceptance
    else:
        assert out[-1].stats.rounds == 0


def test_copies_pay_more_when_long_and_trusted():
    gov = calibrated(0.1)
    gov._kept, gov._missed = 6.0, 6.0  # the drafter's own guesses: about half kept
    gov._free = [40.0, 2.0]  # copies: nearly always kept
    gov.draft_cost = 0.3  # a draft model's step: a third of the target's
    gov._resize()
    k = gov.plan()
    assert k > 0
    assert gov.copies_pay_more(8, k)
    assert not gov.copies_pay_more(0, k)  # no copy: nothing to skip to
    gov._free = [2.0, 40.0]  # copies that are rarely right
    assert not gov.copies_pay_more(8, k)
    gov._free, gov._kept, gov._missed = [6.0, 6.0], 60.0, 1.0  # a drafter better than its copies
    gov.draft_cost = 0.01
    gov._resize()
    assert not gov.copies_pay_more(1, gov.plan())


def test_copies_that_lose_are_paused_apart_from_the_drafter():
    """Rounds of copies alone and rounds of the drafter's own guesses are each judged
    on their own: copies that lose pause copies, not a drafter that pays; a drafter
    that loses is paused while copies that pay go on."""
    gov = calibrated(0.1)
    for _ in range(_MIN_ROUNDS):  # copies alone: 1 token per 0.2 s round against 10 tokens/s plain
        gov.record_round(0.2, 5, 0, 1, free=True)
    assert not gov.free_drafts_allowed
    assert not gov.paused and gov.plan() > 0
    for _ in range(_PAUSE_MIN // 4):  # the pause lasts tokens, whatever emits them
        gov.record_round(0.15, 4, 3, 4)
    assert gov.free_drafts_allowed

    gov = calibrated(0.1)
    for _ in range(_MIN_ROUNDS):  # the drafter's own rounds lose
        gov.record_round(0.5, 4, 2, 3)
    assert gov.paused and gov.plan() == 0
    assert gov.free_drafts_allowed
    for _ in range(_MIN_ROUNDS):  # copies alone that pay: 5 tokens per 0.15 s
        gov.record_round(0.15, 5, 4, 5, free=True)
        assert gov.free_drafts_allowed
    assert not gov.paused  # their 30 tokens counted towards the drafter's pause


class CountingStub(HintStub):
    def __init__(self, hints):
        super().__init__(hints)
        self.calls = 0

    def propose(self, k, params, rng, max_nodes=None):
        self.calls += 1
        return super().propose(k, params, rng, max_nodes)


class OracleCopies(Drafter):
    """A branch source that copies what the target will say next (as lookup does where
    the reply repeats its context): copied tokens, no draft step."""

    def __init__(self, future, start):
        self.future, self.start, self.seq = list(future), start, []

    def reset(self, tokens, runner=None):
        self.seq = list(tokens)

    def extend(self, tokens):
        self.seq += list(tokens)

    def accept(self, kept, nxt):
        self.seq += list(kept) + [nxt]

    def propose(self, k, params=None, rng=None, max_nodes=None):
        at = len(self.seq) - self.start
        return DraftTree.chain(self.future[at:at + 8], guessed=0)


def test_a_long_trusted_copy_skips_the_drafters_own_steps(monkeypatch):
    """Where the copies are long and right, copied branches alone are drafted and the
    drafter's own (paid) steps skipped; the output stays the plain greedy one. Control:
    a governor that never prefers copies asks the drafter in every round it plans."""
    from mlxspec.drafters.compose import Composite

    target = tiny_model(V, layers=2, hidden=48, seed=3)
    prompt = [5, 9, 14, 2, 7]
    ref = greedy_reply(target, prompt, 24)

    def run():
        stub, copies = CountingStub([0.9]), OracleCopies(ref, start=len(prompt))
        engine = Engine(target, CharTokenizer(V), Composite(stub, [copies]), num_draft=4,
                        draft_name="stub+copies")
        engine.cost, engine.plain_step_s = CPU_FLOAT, 0.1
        out = list(engine.stream(prompt, SamplingParams(), max_tokens=24))
        assert [r.token for r in out] == ref
        return stub.calls, out[-1].stats.rounds

    skipping, rounds = run()
    monkeypatch.setattr(Governor, "copies_pay_more", lambda self, depth, k: False)
    asked, rounds_ctrl = run()
    assert rounds > 0 and rounds_ctrl > 0
    assert skipping < asked / 2


class ShortOracle(OracleCopies):
    def propose(self, k, params=None, rng=None, max_nodes=None):
        at = len(self.seq) - self.start
        return DraftTree.chain(self.future[at:at + 2], guessed=0)


@pytest.mark.parametrize("apart", [True, False])
def test_own_guesses_and_copies_are_measured_apart(apart, monkeypatch):
    """A drafter whose own guesses are always wrong beside short copies that are always
    right: in merged rounds the kept path is the copy's. Measured apart, the copies'
    rate is known after the first rounds and they draft alone, skipping the drafter's
    paid steps. Control: measured on the merged tree, the copies' hits count as the
    drafter's, the copies are never measured, and the drafter is asked every round."""
    from mlxspec.drafters.compose import Composite

    if not apart:
        monkeypatch.setattr(Composite, "last_sources", lambda self: (None, None))
    target = tiny_model(V, layers=2, hidden=48, seed=3)
    prompt = [5, 9, 14, 2, 7]
    ref = greedy_reply(target, prompt, 32)
    stub = CountingStub([0.9])
    engine = Engine(target, CharTokenizer(V), Composite(stub, [ShortOracle(ref, start=len(prompt))]),
                    num_draft=4, draft_name="stub+copies")
    engine.cost, engine.plain_step_s = CPU_FLOAT, 0.1
    out = list(engine.stream(prompt, SamplingParams(), max_tokens=32))
    assert [r.token for r in out] == ref
    (gov,) = engine._governors.values()
    if apart:
        assert gov.free_acceptance > 0.8 and stub.calls <= 3
    else:
        assert stub.calls > 8


def test_a_new_prompt_is_fed_to_the_draft_model_as_the_reply_starts(monkeypatch):
    """The draft model's catch-up on a new prompt happens at reset (with the target's
    prefill), not inside the first draft step: its time must not read as the cost of
    drafting (a few new prompts priced the 0.5B out of every later round). Control: the
    first draft step would have fed the whole prompt."""
    target = tiny_model(V, layers=2, hidden=48, seed=3, scale=3.0)
    drafter = ModelDrafter(target, V, min_confidence=0.0)
    prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    fed = []
    forward = TargetRunner.forward
    monkeypatch.setattr(TargetRunner, "_hidden_last",
                        lambda self, tokens, project=False: forward(self, tokens)[-1])  # prefill through forward

    def spy(self, tokens, last_only=False):
        fed.append(len(tokens))
        return forward(self, tokens, last_only)

    drafter.reset(prompt, None)
    monkeypatch.setattr(TargetRunner, "forward", spy)
    tree = drafter.propose(3, SamplingParams(), None)
    assert len(tree) == 3 and fed == [1, 1, 1]  # the last prompt token, then each drafted one
    later = prompt + list(tree.tokens[:1]) + [20, 21, 22]  # a later turn: one draft kept, new tokens
    drafter.reset(later, None)
    assert drafter._runner.length == len(later) - 1 and drafter._cached == later[:-1]


def test_a_new_governor_starts_from_the_draft_models_size_then_from_what_was_measured():
    """A draft model's first draft is sized by its step's likely cost (its bytes over the
    target's: one decoding step reads every weight once), not the cheap prior that suits a
    head: with a 0.5B beside a 1.5B the prior drafts 8 deep on a first reply. A governor
    made later (sampling after greedy) starts from what the engine's first one measured.
    Control: without the hint the first depth is the prior's, deeper."""
    target = tiny_model(V, layers=3, hidden=64, seed=3)
    small = tiny_model(V, layers=1, hidden=64, seed=4)
    drafter = ModelDrafter(small, V)
    from mlxspec.runtime.weights import param_bytes

    ratio = param_bytes(small) / param_bytes(target)
    assert 0.2 < ratio < 0.6 and drafter.step_cost_hint(param_bytes(target)) == pytest.approx(ratio)
    assert Drafter.step_cost_hint(drafter, 1) is None  # the base: no guess

    engine = Engine(target, CharTokenizer(V), drafter, num_draft=3)
    engine.cost, engine.plain_step_s = CPU_FLOAT, 0.1
    gov = engine._governor_for(3, True)
    assert gov.draft_cost == pytest.approx(ratio) and not gov.draft_cost_measured
    prior = Governor(gov.max_k, CPU_FLOAT, 0.1)
    assert gov.plan() < prior.plan()  # the 0.05 prior drafts deeper
    gov.record_round(0.3, 2, 2, 3, draft_seconds=0.02, guessed=2)  # a step measured at 0.1 of the target's
    assert gov.draft_cost_measured
    sampled = engine._governor_for(3, False)
    assert sampled.draft_cost == pytest.approx(gov.draft_cost)
    same_size = Engine(target, CharTokenizer(V), ModelDrafter(target, V), num_draft=3)
    same_size.cost, same_size.plain_step_s = CPU_FLOAT, 0.1
    first = same_size._governor_for(3, True)  # a guess of 1.0 would never draft, so never time a step
    assert first.draft_cost == 0.5 and first.plan() > 0
