"""Speculative sampling must reproduce the target's distribution exactly."""
import numpy as np
import pytest
from scipy.stats import chisquare

from mlxspec.drafters.draft_model import ModelDrafter
from mlxspec.engine import Engine
from mlxspec.sampling import SamplingParams, probs_from_logits
from mlxspec.runtime.target import TargetRunner
from mlxspec.verify import verify_sampling
from tiny import CharTokenizer, perturbed_copy, tiny_model


def _first_token_counts(rule, p_logits, q, params, n, seed=0):
    """Run one verification step n times; count the first emitted token."""
    rng = np.random.default_rng(seed)
    counts = np.zeros(p_logits.shape[1], dtype=np.int64)
    for _ in range(n):
        x = int(np.searchsorted(np.cumsum(q[0]), rng.random() * q[0].sum(), side="right"))
        n_accepted, tok = rule(p_logits, [x], q, [], params, rng)
        counts[x if n_accepted else tok] += 1
    return counts


def _wrong_rule(p_logits, drafts, q, context, params, rng):
    """Plausible bug: on rejection resample from p instead of norm(max(0, p - q))."""
    p = probs_from_logits(p_logits[0], context, params)
    x = drafts[0]
    if rng.random() * q[0][x] < p[x]:
        return 1, x
    return 0, int(rng.choice(len(p), p=p))


@pytest.mark.parametrize("params", [SamplingParams(temp=1.0), SamplingParams(temp=0.7, top_p=0.9),
                                    SamplingParams(temp=1.3, top_k=5)])
def test_verification_step_is_exact(params):
    rng = np.random.default_rng(1)
    V = 12
    p_logits = rng.normal(size=(2, V)) * 2
    q = np.stack([probs_from_logits(rng.normal(size=V) * 2, [], params)])
    expected = probs_from_logits(p_logits[0], [], params)
    n = 20000
    counts = _first_token_counts(verify_sampling, p_logits, q, params, n)
    support = expected > 0
    assert counts[~support].sum() == 0
    assert chisquare(counts[support], expected[support] * n).pvalue > 1e-3


def test_the_statistical_test_catches_a_wrong_rule():
    params = SamplingParams(temp=1.0)
    rng = np.random.default_rng(1)
    V = 12
    p_logits = rng.normal(size=(2, V)) * 2
    q = np.stack([probs_from_logits(rng.normal(size=V) * 2, [], params)])
    expected = probs_from_logits(p_logits[0], [], params)
    counts = _first_token_counts(_wrong_rule, p_logits, q, params, 20000)
    assert chisquare(counts, expected * 20000).pvalue < 1e-6


def test_engine_sampling_matches_target_joint_distribution():
    """Chi-square over the first three generated tokens (the 2nd and 3rd come out of a
    speculative round) against the target's exact joint distribution."""
    V = 6
    target = tiny_model(V, layers=1, hidden=16, scale=2.0, seed=4)
    draft = perturbed_copy(target, 0.3, seed=5)  # a poor draft: many rejections
    params = SamplingParams(temp=1.0)
    prompt = [1, 2]

    def dist(prefix):
        r = TargetRunner(target)
        return probs_from_logits(np.array(r.prefill(prompt + prefix)), [], params)

    joint = np.zeros((V, V, V))
    p0 = dist([])
    for a in range(V):
        p1 = dist([a])
        for b in range(V):
            joint[a, b] = p0[a] * p1[b] * dist([a, b])
    engine = Engine(target, CharTokenizer(V), ModelDrafter(draft, V, min_confidence=0.0),
                    num_draft=2, draft_name="d", adaptive=False)
    n = 6000
    counts = np.zeros((V, V, V))
    rejected = 0
    for seed in range(n):
        out = list(engine.stream(prompt, params, max_tokens=3, seed=seed))
        a, b, c = (r.token for r in out)
        counts[a, b, c] += 1
        rejected += out[-1].stats.drafted - out[-1].stats.accepted
    assert rejected > n * 0.2  # the rejection path was exercised
    flat_e, flat_c = joint.ravel() * n, counts.ravel()
    big = flat_e >= 5  # pool rare cells so chi-square stays valid
    obs = np.append(flat_c[big], flat_c[~big].sum())
    exp = np.append(flat_e[big], flat_e[~big].sum())
    assert chisquare(obs, exp).pvalue > 1e-3


def test_probs_respect_top_k_and_top_p():
    logits = np.array([4.0, 3.0, 2.0, 1.0, 0.0])
    p = probs_from_logits(logits, [], SamplingParams(temp=1.0, top_k=2))
    assert (p[2:] == 0).all() and p[:2].sum() == pytest.approx(1.0)
    p = probs_from_logits(logits, [], SamplingParams(temp=1.0, top_p=0.5))
    assert p[0] == pytest.approx(1.0)
    p = probs_from_logits(logits, [0], SamplingParams(temp=1.0, repetition_penalty=2.0))
    assert p[0] < probs_from_logits(logits, [], SamplingParams(temp=1.0))[0]


@pytest.mark.parametrize("kw", [dict(temp=-0.1), dict(temp=float("nan")), dict(top_p=0.0),
                                dict(top_p=1.5), dict(top_k=-1), dict(repetition_penalty=0.0)])
def test_invalid_sampling_params(kw):
    from mlxspec.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError):
        SamplingParams(**kw).validated()
