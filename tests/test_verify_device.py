"""The device rules (verify_device.py, relaxed_device.py, device_sampling.py) against the
host ones: the processed distributions agree to float32 rounding, and the Markov
chi-square tests of test_sampling / test_relaxed hold with the rows on the device
(chains and trees with a copied sibling), with controls that fail."""
import mlx.core as mx
import numpy as np
import pytest

import mlxspec.verify_device as verify_device
from mlxspec.device_sampling import TOP_P_CANDIDATES, greedy_ids, probs_rows
from mlxspec.relaxed import Relaxed
from mlxspec.sampling import SamplingParams, greedy_token, probs_from_logits
from mlxspec.verify import verify
from test_relaxed import chain_joint, ens_matrix, last_pair_counts
from test_relaxed import run_markov as relaxed_markov
from test_sampling import P_MIN, markov, markov_exact, pvalue
from test_sampling import run_markov

CONTEXTS = [[1, 2], [1, 2, 2], [], [3] * 70 + [4]]


@pytest.mark.parametrize("params", [SamplingParams(temp=1.0), SamplingParams(temp=0.7, top_p=0.8),
                                    SamplingParams(temp=1.3, top_k=3, repetition_penalty=1.8),
                                    SamplingParams(temp=0.5, top_p=0.9, top_k=40, repetition_penalty=0.7)])
@pytest.mark.parametrize("V", [5, 300, 3 * TOP_P_CANDIDATES])
def test_device_distributions_equal_the_host_rule(params, V):
    rng = np.random.default_rng(V)
    logits = (rng.normal(size=(len(CONTEXTS), V)) * 3).astype(np.float32)
    P, ok = probs_rows(mx.array(logits), CONTEXTS, params)
    host = np.stack([probs_from_logits(row, ctx, params) for row, ctx in zip(logits, CONTEXTS)])
    assert ok is None or np.array(ok).all()
    np.testing.assert_allclose(np.array(P), host, atol=2e-6)
    greedy = SamplingParams(repetition_penalty=params.repetition_penalty)
    assert np.array(greedy_ids(mx.array(logits), CONTEXTS, greedy)).tolist() == \
        [greedy_token(row, ctx, greedy) for row, ctx in zip(logits, CONTEXTS)]


def test_top_p_beyond_its_candidates_is_flagged_and_exact_with_a_full_sort():
    V = 3 * TOP_P_CANDIDATES
    logits = (np.random.default_rng(0).normal(size=(2, V)) * 0.1).astype(np.float32)  # flat
    params = SamplingParams(temp=5.0, top_p=0.95)
    _, ok = probs_rows(mx.array(logits), [[1], [2]], params)
    assert not np.array(ok).any()
    P, _ = probs_rows(mx.array(logits), [[1], [2]], params, full_sort=True)
    host = np.stack([probs_from_logits(row, [i + 1], params) for i, row in enumerate(logits)])
    np.testing.assert_allclose(np.array(P), host, atol=1e-7)
    assert ((np.array(P) > 0) == (host > 0)).all()


def on_device(rule):
    return lambda logits, tree, seq, params, rng: rule(mx.array(logits.astype(np.float32)), tree, seq, params, rng)


def pair_counts(seqs, V=4):
    counts = np.zeros((V, V))
    np.add.at(counts, (seqs[:, -2], seqs[:, -1]), 1)
    return counts


@pytest.mark.parametrize("depth,branch", [(3, False), (4, True)])
def test_device_rule_is_exact_at_every_draft_position(depth, branch):
    params = SamplingParams(temp=1.0)
    p, q = markov(1), markov(2)
    br = (lambda seq: (seq[-1] + 1) % 4) if branch else None
    seqs = run_markov(p, q, params, depth, depth + 1, 4000, seed=depth, branch=br, rule=on_device(verify))
    assert pvalue(pair_counts(seqs), markov_exact(p, params, depth + 1)) > P_MIN


def test_the_device_markov_test_catches_a_wrong_residual(monkeypatch):
    monkeypatch.setattr(verify_device, "residual_rows", lambda r, q: r)
    params = SamplingParams(temp=1.0)
    p, q = markov(1), markov(2)
    seqs = run_markov(p, q, params, 4, 5, 4000, seed=4, rule=on_device(verify))
    assert pvalue(pair_counts(seqs), markov_exact(p, params, 5)) < 1e-6


WEIGHT = 0.6


def relaxed_rule(weight=WEIGHT):
    r = Relaxed(weight, 1.0)
    return on_device(lambda logits, tree, seq, params, rng: r.verify(logits, tree, seq, params, rng, {}))


@pytest.mark.parametrize("branch", [False, True])
def test_device_relaxed_sampling_draws_from_the_ensemble(branch):
    params = SamplingParams(temp=1.0)
    p, q = markov(1), markov(2)
    E = ens_matrix(p, q, params, WEIGHT)
    seqs = relaxed_markov(p, q, params, 3, 3, 4000, seed=3, rule=relaxed_rule(), branch=branch)
    assert pvalue(last_pair_counts(seqs), chain_joint(E, 3)) > P_MIN


def test_the_device_ensemble_test_catches_exact_verification_and_a_wrong_residual(monkeypatch):
    params = SamplingParams(temp=1.0)
    p, q = markov(1), markov(2)
    E = ens_matrix(p, q, params, WEIGHT)
    seqs = relaxed_markov(p, q, params, 3, 3, 4000, seed=3, rule=on_device(verify))
    assert pvalue(last_pair_counts(seqs), chain_joint(E, 3)) < 1e-6
    monkeypatch.setattr(verify_device, "residual_rows", lambda r, q: r)
    seqs = relaxed_markov(p, q, params, 3, 3, 4000, seed=3, rule=relaxed_rule())
    assert pvalue(last_pair_counts(seqs), chain_joint(E, 3)) < 1e-6
