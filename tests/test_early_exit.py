"""Early-exit verification (Engine(verify="early-exit"), issue 16): greedy output equals
plain greedy output over drafters, architectures, seeds, draft and tentative lengths;
the middle level's reuse of KV caches and hidden states gives the logits of a full
forward; sampling is exact (chi-square, with a control that fails)."""
import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import make_prompt_cache

import mlxspec.hierarchy.loop as loop
from mlxspec.drafters.head_runner import HeadTargetRunner
from mlxspec.engine import Engine
from mlxspec.head.model import new_head
from mlxspec.hierarchy.policy import ExitPolicy
from mlxspec.costs import CostModel
from mlxspec.runtime.early_exit import ExitLevels, default_exit_layer
from mlxspec.runtime.layered import LayeredModel
from mlxspec.runtime.target import TargetRunner
from mlxspec.sampling import SamplingParams
from test_drafter_matrix import make_drafter
from test_sampling import CASES, TableDrafter, pvalue
from tiny import ARCHS, CharTokenizer, tiny_model

V = 64


def ee_engine(target, drafter, k, exit_layer=None, tentative=None):
    eng = Engine(target, CharTokenizer(V), drafter, num_draft=k, adaptive=False, verify="early-exit")
    eng.exit_layer, eng.tentative_length = exit_layer, tentative
    return eng


# -- greedy: lossless -----------------------------------------------------------------
# every architecture with the head and lookup branches (k > 0); the draft model (k = 0)
# and lookup alone on a few
MATRIX = [("head+lookup", a) for a in ARCHS] + [("draft-model", a) for a in ("llama", "qwen3", "gemma2")] + [
    ("lookup", "qwen2"), ("head", "mistral")]


@pytest.mark.parametrize("kind,arch", MATRIX)
def test_greedy_early_exit_equals_plain(kind, arch):
    tok = CharTokenizer(V)
    totals = dict.fromkeys(("full_verifications", "tentative_verified", "full_accepted",
                            "intermediate_checked", "intermediate_rejected"), 0)
    for seed in range(2):
        target = tiny_model(V, layers=4, hidden=32, seed=seed, arch=arch, scale=3.0)
        base = [int(t) for t in np.random.default_rng(seed).integers(0, V, 5)]
        first = [r.token for r in Engine(target, tok).stream(base, SamplingParams(), max_tokens=12)]
        prompt = base + first + base  # the reply tends to repeat itself: lookup fires
        ref = [r.token for r in Engine(target, tok).stream(prompt, SamplingParams(), max_tokens=24)]
        for k, exit_layer, tentative in ((1, None, None), (4, None, 6), (3, 3, 2)):
            if kind.startswith("head") and exit_layer is not None and exit_layer <= 2:
                continue
            eng = ee_engine(target, make_drafter(kind, target, target), k, exit_layer, tentative)
            out = list(eng.stream(prompt, SamplingParams(), max_tokens=24))
            assert [r.token for r in out] == ref, (seed, k, exit_layer, tentative)
            for key in totals:
                totals[key] += out[-1].stats.extra.get(key, 0)
    assert totals["full_verifications"] > 0  # the hierarchy ran
    if kind != "lookup":  # both levels rejected something: every path of the loop ran
        assert totals["intermediate_rejected"] > 0
        assert totals["full_accepted"] < totals["tentative_verified"]


def test_greedy_early_exit_over_a_conversation_and_a_long_reply():
    """Several turns on one engine (its caches reused between calls), replies long enough
    that the policy's measurements steer the tentative length and the method choice."""
    target = tiny_model(V, layers=4, hidden=32, seed=3, scale=3.0)
    tok = CharTokenizer(V)
    eng = Engine(target, tok, make_drafter("head+lookup", target, target), num_draft=3, verify="early-exit")
    prompt = [int(t) for t in np.random.default_rng(3).integers(0, V, 9)]
    kinds = {"full_verifications": 0, "single_level_rounds": 0}
    for turn in range(3):
        ref = [r.token for r in Engine(target, tok).stream(prompt, SamplingParams(), max_tokens=40)]
        res = list(eng.stream(prompt, SamplingParams(), max_tokens=40))
        out = [r.token for r in res]
        assert out == ref, turn
        for key in kinds:
            kinds[key] += res[-1].stats.extra.get(key, 0)
        prompt = prompt + out + [turn + 1, turn + 2]
    assert all(kinds.values()), kinds  # both kinds of round ran (the method choice measures both)


# -- the reuse of caches and hidden states --------------------------------------------
TOL = 1e-4  # float32: the same layers over the same caches, split at other points


def reference_logits(model, tokens, m):
    """Exit logits at layer m and the target's logits at every position, from scratch."""
    lm = LayeredModel(model)
    cache = make_prompt_cache(model)
    h = lm.run_layers(lm.embed(tokens), 0, m, cache)
    exit_ = lm.logits(lm.norm(h))[0]
    full = lm.logits(lm.norm(lm.run_layers(h, m, lm.num_layers, cache)))[0]
    return np.array(exit_.astype(mx.float32)), np.array(full.astype(mx.float32))


@pytest.mark.parametrize("with_head", [False, True])
def test_levels_reuse_gives_the_logits_of_a_full_forward(with_head):
    """Checks at the exit (drafts partly rejected), the full pass from the kept layer-m
    states, a cut after it, then an ordinary forward: every row equals the same row of
    a from-scratch forward, to TOL."""
    model = tiny_model(V, layers=6, hidden=32, seed=2, arch="qwen2", scale=2.0)
    S = [5, 9, 1, 33, 7, 2]
    run = HeadTargetRunner(model, new_head(model, 2)) if with_head else TargetRunner(model)
    run.prefill(S[:-1])
    levels = ExitLevels(run, exit_layer=4)
    T: list[int] = []  # tentative tokens after S[-1]
    for drafts, accepted, own in (([11, 12, 13], 1, 20), ([40, 41], 2, 21), ([50, 51, 52], 0, 22)):
        x = T[-1] if T else S[-1]
        if with_head:  # the draft fed its inputs through layers 0..1: reused, not rerun
            for t in [x] + drafts[:-1]:
                run.draft_step(t)
        got = np.array(levels.check(x, drafts))
        before = S + T
        ref_exit, _ = reference_logits(model, before + drafts, 4)
        np.testing.assert_allclose(got, ref_exit[len(before) - 1 :], atol=TOL, rtol=TOL)
        levels.keep_check(accepted)
        T += drafts[:accepted] + [own]
    assert levels.pending == len(T)
    full = np.array(levels.full())
    _, ref_full = reference_logits(model, S + T[:-1], 4)
    np.testing.assert_allclose(full, ref_full[len(S) - 1 :], atol=TOL, rtol=TOL)
    levels.keep_full(3)  # S[-1], T[0], T[1] verified; T[2] the next input
    assert run.length == len(S) - 1 + 3
    after = np.array(run.forward([T[2], 63]))
    _, ref = reference_logits(model, S + T[:3] + [63], 4)
    np.testing.assert_allclose(after, ref[-2:], atol=TOL, rtol=TOL)
    if with_head:
        assert run.reused > 0 and run.low_len == run.length


# -- sampling: exact ----------------------------------------------------------------------
V_E = 5
SAMPLES = 2000


@pytest.fixture(scope="module")
def two_layer():
    return tiny_model(V_E, layers=2, hidden=16, scale=2.0, seed=4)


def ee_counts(model, drafter, params, k=3, tentative=4, samples=SAMPLES):
    from test_sampling import engine_counts

    eng = Engine(model, CharTokenizer(V_E), drafter, num_draft=k, adaptive=False, verify="early-exit")
    eng.tentative_length = tentative
    eng.trained_exit = False  # the untrained exit here (test_trained_exit.py: the trained one)
    counts, rounds, _ = engine_counts(eng, params, samples, max_tokens=tentative + 1)
    return counts, rounds


def joint(model, params):
    from test_sampling import exact_joint

    return exact_joint(model, params)


@pytest.mark.parametrize("case", ["temp1", "penalty"])
def test_sampling_early_exit_is_exact(two_layer, case):
    """The first three tokens against the target's exact joint; the exit (layer 1 of 2)
    disagrees with the target often, so both levels reject."""
    params = CASES[case]
    n = SAMPLES if case == "temp1" else SAMPLES // 2
    counts, rounds = ee_counts(two_layer, TableDrafter(), params, samples=n)
    assert rounds >= n
    assert pvalue(counts, joint(two_layer, params)) > 1e-3


def test_sampling_early_exit_with_the_head_is_exact():
    """The head's layers 0..k-1 shared (k = 1, exit at 2 of 3), top-k processing."""
    model = tiny_model(V_E, layers=3, hidden=32, seed=7, scale=1.5)
    params = CASES["top_k"]
    from test_sampling import head_drafter

    counts, rounds = ee_counts(model, head_drafter(model, False), params, samples=1000)
    assert rounds > 0 and pvalue(counts, joint(model, params)) > 1e-3


@pytest.mark.parametrize("broken", ["no-full-check", "wrong-rows"])
def test_the_sampling_test_catches_wrong_rules(two_layer, broken, monkeypatch):
    """Controls: tentative tokens emitted without the full check (the exit's
    distribution, not the target's), and proposal rows other than the exit's (uniform)."""
    real_chain, real_verify = loop.tentative_chain, loop.verify
    if broken == "no-full-check":
        def chain(tokens, rows):
            tree = real_chain(tokens, rows)
            tree.unchecked = True
            return tree

        def verify(logits, tree, ctx, params, rng):
            if getattr(tree, "unchecked", False):
                return list(range(len(tree))), 0
            return real_verify(logits, tree, ctx, params, rng)

        monkeypatch.setattr(loop, "verify", verify)
    else:
        def chain(tokens, rows):
            return real_chain(tokens, [np.full(V_E, 1.0 / V_E) for _ in tokens])

    monkeypatch.setattr(loop, "tentative_chain", chain)
    params = CASES["temp1"]
    counts, _ = ee_counts(two_layer, TableDrafter(), params, samples=600)
    assert pvalue(counts, joint(two_layer, params)) < 1e-6


# -- the policy ---------------------------------------------------------------------------
def test_policy_gathers_more_tentative_tokens_when_the_exit_agrees_and_the_full_pass_costs():
    cost = CostModel({1: 1.0, 2: 1.05, 4: 1.1, 8: 1.2, 12: 1.3})  # a flat curve: verification dominates
    agree, disagree = ExitPolicy(0.25), ExitPolicy(0.25)
    for _ in range(20):
        agree.record_full(8, 8, tent_seconds=8 * 0.02, full_seconds=0.8, cost_model=cost)
        disagree.record_full(8, 0, tent_seconds=8 * 0.02, full_seconds=0.8, cost_model=cost)
    assert agree.agreement > 0.9 and disagree.agreement < 0.2
    assert agree.length(cost, 1.0, 4) > disagree.length(cost, 1.0, 4)
    cheap = ExitPolicy(0.25)  # the same agreement, a full pass that costs little against the exit
    for _ in range(20):
        cheap.record_full(8, 6, tent_seconds=8 * 0.2, full_seconds=0.05, cost_model=cost)
    pricey = ExitPolicy(0.25)
    for _ in range(20):
        pricey.record_full(8, 6, tent_seconds=8 * 0.02, full_seconds=2.0, cost_model=cost)
    assert pricey.length(cost, 1.0, 4) > cheap.length(cost, 1.0, 4)
    assert ExitPolicy(0.25, adaptive=False).length(cost, 1.0, 5) == 5


def test_policy_runs_the_faster_method_and_probes_the_other():
    p = ExitPolicy(0.25)
    chosen = []
    for _ in range(64):
        single = p.use_single_level()
        chosen.append(single)
        (p.single if single else p.early).add(2 if single else 1, 1.0)  # single-level twice as fast
    assert chosen[:3] == [False] * 3  # early-exit measured first
    tail = chosen[16:]
    assert sum(tail) > 0.85 * len(tail) and not all(tail)  # mostly single-level, early-exit probed
    q = ExitPolicy(0.25)
    for _ in range(64):
        single = q.use_single_level()
        (q.single if single else q.early).add(1 if single else 2, 1.0)
    assert q.early.n > q.single.n


def test_default_exit_layer():
    assert default_exit_layer(28) == 7 and default_exit_layer(30) == 8  # a quarter of the depth
    assert default_exit_layer(30, draft_layer=8) == 12  # above the head's exit by an eighth
    assert default_exit_layer(4, draft_layer=2) == 3
    with pytest.raises(ValueError):
        ExitLevels(TargetRunner(tiny_model(V, layers=4)), exit_layer=4)


def test_without_layer_access_the_exact_round_runs():
    from mlxspec.drafters.lookup import LookupDrafter

    class NoLayers(TargetRunner):
        lm = property(lambda self: None)

    class Drafter(LookupDrafter):
        def make_runner(self, model):
            return NoLayers(model)

    target = tiny_model(V, layers=4, hidden=32, seed=1, scale=3.0)
    prompt = [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3]
    ref = [r.token for r in Engine(target, CharTokenizer(V)).stream(prompt, SamplingParams(), max_tokens=16)]
    out = list(ee_engine(target, Drafter(), 4).stream(prompt, SamplingParams(), max_tokens=16))
    assert [r.token for r in out] == ref
    assert out[-1].stats.rounds > 0 and "full_verifications" not in out[-1].stats.extra
