"""The governor: draft length adapts, speculation pauses when it is measured to lose
against plain decoding, and the engine keeps that knowledge across calls."""
from mlxspec.drafters.model_drafter import ModelDrafter
from mlxspec.engine import Engine
from mlxspec.governor import _MIN_ROUNDS, _PAUSE_MIN, Governor
from mlxspec.sampling import SamplingParams
from tiny import CharTokenizer, tiny_model

V = 64


def calibrated(plain_s=0.1, k=4):
    gov = Governor(k, 2 * k + 2)
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
