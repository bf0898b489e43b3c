"""The low-precision equality criterion (mlxspec/eval/lossless.py): a divergence from
plain greedy output is allowed only at a near-tie within the dtype's bound; float32 is
strict. Controls: a verifier that keeps the runner-up fails it; so does a substitution
at a wide margin."""
import mlx.core as mx
import numpy as np
import pytest

import mlxspec.verify_device as verify_device
from mlxspec.drafters.draft_model import ModelDrafter
from mlxspec.engine import Engine
from mlxspec.eval.lossless import (assert_greedy_lossless, check_greedy, first_divergence,
                                   plain_logits_at, tie_bound)
from mlxspec.sampling import SamplingParams
from tiny import CharTokenizer, perturbed_copy, tiny_model

V = 64


def _drafter(seed):
    """A draft model that agrees often but not always (so rounds accept and reject)."""
    return ModelDrafter(perturbed_copy(tiny_model(V, layers=3, hidden=32, seed=seed, scale=3.0), 0.02, seed=7), V)


def _case(seed=0, fmt="bfloat16"):
    model = tiny_model(V, layers=3, hidden=32, seed=seed, arch="llama", scale=3.0, fmt=fmt)
    base = [int(t) for t in np.random.default_rng(seed).integers(0, V, 5)]
    tok = CharTokenizer(V)
    first = [r.token for r in Engine(model, tok).stream(base, SamplingParams(), max_tokens=10)]
    prompt = base + first + base
    plain = [r.token for r in Engine(model, tok).stream(prompt, SamplingParams(), max_tokens=20)]
    return model, tok, prompt, plain


def test_bounds_per_dtype():
    assert tie_bound("float32", 20.0) == 0.0  # strict
    assert tie_bound("bfloat16", 16.0) == pytest.approx(1.0)  # 2 * 8 ulps of 16 at 2^-8
    assert tie_bound("float16", -16.0) == pytest.approx(1.0 / 8)
    with pytest.raises(ValueError):
        tie_bound("int8", 1.0)


def test_first_divergence():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2, 3], [1, 2]) == 2  # a shorter output is a divergence too


def test_speculative_output_meets_the_criterion_and_float32_is_strict():
    for fmt in ("bfloat16", "float32"):
        model, tok, prompt, plain = _case(1, fmt)
        out = list(Engine(model, tok, _drafter(1), num_draft=4, adaptive=False)
                   .stream(prompt, SamplingParams(), max_tokens=20))
        assert out[-1].stats.rounds > 0
        assert_greedy_lossless(model, prompt, plain, [r.token for r in out], fmt)


def test_a_verifier_that_keeps_the_runner_up_fails_the_criterion(monkeypatch):
    model, tok, prompt, plain = _case(1)

    def runner_up(logits, contexts, params, win=None):
        return mx.argsort(logits, axis=-1)[:, -2]

    monkeypatch.setattr(verify_device, "greedy_ids", runner_up)
    out = list(Engine(model, tok, _drafter(1), num_draft=4, adaptive=False)
               .stream(prompt, SamplingParams(), max_tokens=20))
    spec = [r.token for r in out]
    assert spec != plain
    with pytest.raises(AssertionError, match="diverges at token"):
        assert_greedy_lossless(model, prompt, plain, spec, "bfloat16")


def test_a_substitution_passes_only_within_the_bound():
    """Swap plain's token for its runner-up at one position: allowed where plain's top-2
    margin is within the bound, refused where it is wider."""
    seen = set()
    for seed in range(6):
        model, _, prompt, plain = _case(seed)
        for i in range(len(plain)):
            z = plain_logits_at(model, prompt, plain, i)
            assert int(np.argmax(z)) == plain[i]  # the plain path's own logits
            spec = plain[:i] + [int(np.argsort(z)[-2])]
            d = check_greedy(model, prompt, plain, spec, "bfloat16")
            assert d.position == i and d.gap == pytest.approx(d.margin)
            tie = d.margin <= tie_bound("bfloat16", float(np.abs(z).max()))
            assert d.near_tie == tie
            if tie:
                assert_greedy_lossless(model, prompt, plain, spec, "bfloat16")
            else:
                with pytest.raises(AssertionError):
                    assert_greedy_lossless(model, prompt, plain, spec, "bfloat16")
            seen.add(tie)
            if seen == {True, False}:
                return
    pytest.fail(f"no {'near-tie' if True not in seen else 'wide margin'} found to check")
