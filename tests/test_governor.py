"""The governor: draft length adapts, speculation pauses when it is measured to lose
against plain decoding, and the engine keeps that knowledge across calls."""
import pytest

from mlxspec.drafters.base import Draft, Drafter
from mlxspec.drafters.head_runner import HeadTargetRunner
from mlxspec.drafters.draft_model import ModelDrafter
from mlxspec.engine import Engine
from mlxspec.governor import _MIN_ROUNDS, _PAUSE_MIN, Governor
from mlxspec.head.model import new_head
from mlxspec.sampling import SamplingParams
from tiny import CharTokenizer, tiny_model

V = 64


def calibrated(plain_s=0.1, k=4, shrink=True):
    gov = Governor(k, 2 * k + 2, shrink=shrink)
    for _ in range(2):
        gov.record_plain(plain_s)
    assert gov.use_speculation()
    return gov


def test_losing_speculation_pauses_then_is_probed_again_with_a_longer_pause():
    gov = calibrated(0.1)
    for _ in range(_MIN_ROUNDS):  # 1 token per 0.5 s round vs 10 tokens/s plain
        gov.record_round(0.5, 4, 0)
    assert gov.paused and not gov.use_speculation()
    for _ in range(_PAUSE_MIN):
        assert not gov.use_speculation()
        gov.record_plain(0.1)
    assert gov.use_speculation()  # probed again
    for _ in range(_MIN_ROUNDS):
        gov.record_round(0.5, 4, 0)
    for _ in range(_PAUSE_MIN):
        gov.record_plain(0.1)
    assert gov.paused  # the second pause is longer


def test_winning_speculation_keeps_going():
    gov = calibrated(0.1)
    for _ in range(4 * _MIN_ROUNDS):  # 4 tokens per 0.15 s round
        gov.record_round(0.15, 4, 3)
        assert gov.use_speculation()


def test_one_slow_round_among_fast_ones_does_not_pause():
    gov = calibrated(0.1)  # plain: 10 tokens/s
    gov.record_round(1.0, 4, 0)  # a cold or unlucky first round: 1 token/s
    for _ in range(_MIN_ROUNDS + 4):  # then 4 tokens per 0.15 s round
        gov.record_round(0.15, 4, 3)
        assert gov.use_speculation()


def test_one_lucky_fast_plain_step_does_not_pause_winning_speculation():
    gov = calibrated(0.1)  # plain: 10 tokens/s
    for seconds in (0.1, 0.1, 0.02):  # one step 5x faster than the rest (timer noise)
        gov.record_plain(seconds)
    assert abs(gov.plain_step_s - 0.1) < 1e-9
    for _ in range(_MIN_ROUNDS + 2):  # 2 tokens per 0.15 s round: 13 tokens/s, a win
        gov.record_round(0.15, 4, 1)
        assert gov.use_speculation()


def test_draft_length_grows_on_full_acceptance_and_shrinks_on_early_rejection():
    gov = calibrated(0.1, k=4)
    gov.record_round(0.1, 4, 4)
    assert gov.k == 5
    gov.record_round(0.1, 5, 0)
    gov.record_round(0.1, 4, 1)
    assert gov.k == 3


def test_a_pause_ends_with_its_reply_but_its_length_carries_over():
    target = tiny_model(V, layers=2, hidden=48, seed=3)
    engine = Engine(target, CharTokenizer(V), ModelDrafter(target, V), num_draft=4, draft_name="self")
    prompt = [1, 2, 3, 4]
    first = list(engine.stream(prompt, SamplingParams(), max_tokens=12))
    assert first[-1].stats.rounds > 0  # drafting for itself: speculation runs
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

    def make_target_runner(self, model):
        return HeadTargetRunner(model, new_head(model, 1)) if self.tree else super().make_target_runner(model)

    def reset(self, prompt, runner):
        self.done = 0

    def extend(self, tokens):
        self.done += len(tokens)

    def commit_path(self, accepted, next_token):
        self.done += len(accepted) + 1

    def propose(self, k, params, rng):
        right = self.ref[self.done: self.done + self.own + self.copied]
        if not self.tree:
            return Draft(tokens=right, own=self.own)
        wrong = [(t + 1) % V for t in right[: self.own]]
        copied = [-1] + [self.own + i for i in range(len(right) - 1)]
        return Draft(tokens=wrong + right, parents=list(range(-1, self.own - 1)) + copied, own=self.own)


def greedy_reply(target, prompt, n=16):
    return [r.token for r in Engine(target, CharTokenizer(V)).stream(prompt, SamplingParams(), max_tokens=n)]


@pytest.mark.parametrize("tree", [False, True])
def test_tokens_kept_from_retrieved_branches_count_for_the_rate(tree, monkeypatch):
    """A round is judged on every token it emitted. A drafter whose own guess is short
    or wrong but whose copied tokens are right produces several tokens per round;
    counting only its own guesses made such rounds look like plain steps at a higher
    price. Chain: one own guess, then copied tokens; tree: a wrong own guess beside a
    copied branch."""
    target = tiny_model(V, layers=2, hidden=32, seed=3, scale=3.0)
    prompt = [1, 2, 3, 4]
    ref = greedy_reply(target, prompt)

    seen = []  # tokens each round was credited with
    judge = Governor._judge

    def spy(self):
        seen.append(self._recent[-1][1])
        judge(self)

    monkeypatch.setattr(Governor, "_judge", spy)
    out = list(Engine(target, CharTokenizer(V), CopyStub(ref, tree), num_draft=4, draft_name="stub").stream(
        prompt, SamplingParams(), max_tokens=16))
    stats = out[-1].stats
    assert [r.token for r in out] == ref
    assert stats.rounds == len(seen) > 0 and stats.accepted > 0
    assert sum(seen) == stats.accepted + stats.rounds


def test_draft_length_follows_the_kept_path_whichever_branch_it_took():
    """Two own guesses, both wrong, beside a right copied branch three deep: the kept
    path went as deep as the guesses, so the next draft must not be shorter (counting
    only the own guesses kept shrank it to 1 round by round)."""
    target = tiny_model(V, layers=2, hidden=32, seed=3, scale=3.0)
    prompt = [1, 2, 3, 4]
    ref = greedy_reply(target, prompt, 24)
    engine = Engine(target, CharTokenizer(V), CopyStub(ref, tree=True, own=2), num_draft=4, draft_name="stub")
    out = list(engine.stream(prompt, SamplingParams(), max_tokens=24))
    assert [r.token for r in out] == ref and out[-1].stats.rounds >= 3
    (gov,) = engine._governors.values()
    assert gov.k == 4


def test_a_drafter_that_sizes_its_own_drafts_keeps_its_cap():
    """The head stops drafting by its own confidence; shortening its cap after each early
    rejection (most rounds, at ~60% agreement) cut its confident chains short: on the
    code benchmark prompt it kept 21 tokens instead of 26."""
    gov = calibrated(0.1, k=4, shrink=False)
    gov.record_round(0.1, 4, 0)
    gov.record_round(0.1, 4, 1)
    assert gov.k == 4
    gov.record_round(0.1, 4, 4)
    assert gov.k == 5  # it still grows


def test_the_engine_gives_the_head_a_cap_that_does_not_shrink():
    from mlxspec.drafters.head import HeadDrafter

    target = tiny_model(V, layers=4, hidden=32, seed=1)
    head = HeadDrafter(target, new_head(target, 2), core_ids=list(range(24)))
    for drafter, shrinks in ((head, False), (ModelDrafter(target, V), True)):
        engine = Engine(target, CharTokenizer(V), drafter, num_draft=4, draft_name="d")
        list(engine.stream([1, 2, 3], SamplingParams(), max_tokens=4))
        (gov,) = engine._governors.values()
        assert gov.shrink is shrinks
