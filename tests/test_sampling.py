"""Speculative sampling reproduces the target's distribution exactly, for chains of
several drafts and for trees, through the engine; the acceptance rate is that of exact
rejection sampling; and each test is shown failing on a deliberately wrong rule."""
import itertools

import numpy as np
import pytest
from scipy.stats import chisquare

import mlxspec.verify as verify_mod
import mlxspec.verify_device as verify_device
from mlxspec.drafters.base import Drafter
from mlxspec.drafters.compose import Composite
from mlxspec.drafters.draft_model import ModelDrafter
from mlxspec.drafters.head import HeadDrafter
from mlxspec.drafters.lookup import LookupDrafter
from mlxspec.engine import Engine
from mlxspec.head.model import new_head
from mlxspec.runtime.target import TargetRunner
from mlxspec.sampling import SamplingParams, probs_from_logits
from mlxspec.tree import DraftTree
from mlxspec.verify import verify
from tiny import CharTokenizer, perturbed_copy, tiny_model

P_MIN = 1e-3  # a correct rule fails a test with probability ~1e-3; the controls land far below


# -- broken variants (controls) -----------------------------------------------------------
def resample_from_r(r, q, x):
    """On rejection sample from the current target distribution, not norm(max(0, r - q))."""
    return r


def sample_and_match(r_x, q_x, u):
    """Accept with probability r(x) whatever q: with the point-mass residual this is
    still distribution-exact (sample-and-match), but it accepts less."""
    return u < r_x


def pvalue(counts: np.ndarray, expected: np.ndarray) -> float:
    """Chi-square p-value, rare cells pooled so every expected count is >= 5."""
    counts, expected = counts.ravel().astype(float), expected.ravel() * counts.sum()
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return chisquare(obs, exp).pvalue


# -- a Markov "target" and "drafter": exact distributions at any depth ------------------
V_M = 4


def markov(seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(V_M, V_M)) * 1.5


def run_markov(p_logits, q_logits, params, depth, n_tokens, n, seed, branch=None, rule=None):
    """Emit n_tokens by rounds of `rule` (default verify()): each round drafts a chain of
    `depth` tokens sampled from q (Markov in the last token) and, if `branch`, a second
    child of the root copied deterministically (a point mass). Returns the emitted
    sequences."""
    rule = rule or verify
    rng = np.random.default_rng(seed)
    out = np.zeros((n, n_tokens), dtype=np.int64)
    for s in range(n):
        seq = [0]
        while len(seq) - 1 < n_tokens:
            toks, qs, last = [], [], seq[-1]
            for _ in range(depth):
                q = probs_from_logits(q_logits[last], [], params)
                last = int(rng.choice(V_M, p=q))
                toks.append(last)
                qs.append(q)
            tree = DraftTree.chain(toks, qs)
            if branch is not None:
                tree = tree.add_branch([branch(seq)])
            rows = [seq[-1]] + tree.tokens
            logits = np.stack([p_logits[rows[0]]] + [p_logits[t] for t in tree.tokens])
            path, nxt = rule(logits, tree, seq, params, rng)
            seq += [tree.tokens[i] for i in path] + [nxt]
        out[s] = seq[1 : n_tokens + 1]
    return out


def markov_exact(p_logits, params, n_tokens):
    P = np.stack([probs_from_logits(p_logits[a], [], params) for a in range(V_M)])
    joint = np.zeros((V_M,) * 2)
    marg = np.eye(V_M)[0]
    for _ in range(n_tokens - 2):
        marg = marg @ P
    for a in range(V_M):  # the last two tokens' joint
        for b in range(V_M):
            joint[a, b] = (marg @ P)[a] * P[a, b]
    return joint


@pytest.mark.parametrize("depth", [2, 4, 8])
@pytest.mark.parametrize("branch", [False, True])
def test_verify_is_exact_at_every_draft_position(depth, branch):
    """The joint of tokens n-1 and n (deep inside a round of `depth` drafts) against the
    exact Markov chain: a wrong q row, a misaligned context or a bad residual at any
    draft position shows."""
    params = SamplingParams(temp=1.0)
    p, q = markov(1), markov(2)
    n_tokens = depth + 1
    br = (lambda seq: (seq[-1] + 1) % V_M) if branch else None
    seqs = run_markov(p, q, params, depth, n_tokens, 6000, seed=depth, branch=br)
    counts = np.zeros((V_M, V_M))
    np.add.at(counts, (seqs[:, -2], seqs[:, -1]), 1)
    assert pvalue(counts, markov_exact(p, params, n_tokens)) > P_MIN


def test_the_markov_test_catches_a_wrong_residual(monkeypatch):
    monkeypatch.setattr(verify_mod, "_residual", resample_from_r)
    params = SamplingParams(temp=1.0)
    p, q = markov(1), markov(2)
    seqs = run_markov(p, q, params, 4, 5, 6000, seed=4)
    counts = np.zeros((V_M, V_M))
    np.add.at(counts, (seqs[:, -2], seqs[:, -1]), 1)
    assert pvalue(counts, markov_exact(p, params, 5)) < 1e-6


# -- the acceptance rate: exact rejection sampling, not sample-and-match -----------------
@pytest.mark.parametrize("params", [SamplingParams(temp=1.0), SamplingParams(temp=0.7, top_p=0.95),
                                    SamplingParams(temp=1.0, top_k=3)])
def test_first_draft_is_accepted_with_probability_sum_of_min_p_q(params, monkeypatch):
    rng = np.random.default_rng(0)
    V = 10
    p_logits = rng.normal(size=(2, V))
    q_logits = p_logits[0] + rng.normal(size=V) * 0.7  # a drafter that roughly agrees
    p = probs_from_logits(p_logits[0], [], params)
    q = probs_from_logits(q_logits, [], params)
    expected = np.minimum(p, q).sum()
    assert 0.25 < expected < 0.95  # p and q overlap substantially

    def rate(n=20000):
        acc = 0
        for _ in range(n):
            x = int(rng.choice(V, p=q))
            path, _ = verify(p_logits, DraftTree.chain([x], [q]), [], params, rng)
            acc += len(path)
        return acc / n

    tol = 4 * np.sqrt(expected * (1 - expected) / 20000)  # 4 standard errors
    assert abs(rate() - expected) < tol
    monkeypatch.setattr(verify_mod, "_accept", sample_and_match)
    assert rate() < expected - tol  # the control accepts measurably less


# -- through the engine, on tiny models ------------------------------------------------
V_E = 5
PROMPT = [1, 2]


def exact_joint(target, params, n=3):
    """Exact joint distribution of the first n generated tokens (context-dependent
    processing such as the repetition penalty included)."""
    def dist(prefix):
        r = TargetRunner(target)
        ctx = PROMPT + list(prefix)
        return probs_from_logits(np.array(r.prefill(ctx)), ctx, params)

    joint = np.zeros((V_E,) * n)
    cache = {}
    for cell in itertools.product(range(V_E), repeat=n):
        pr = 1.0
        for i in range(n):
            key = cell[:i]
            if key not in cache:
                cache[key] = dist(key)
            pr *= cache[key][cell[i]]
        joint[cell] = pr
    return joint


def engine_counts(engine, params, samples, n=3, max_tokens=None):
    counts = np.zeros((V_E,) * n)
    rounds = rejected = 0
    for seed in range(samples):
        out = list(engine.stream(PROMPT, params, max_tokens=max_tokens or n, seed=seed))
        counts[tuple(r.token for r in out[:n])] += 1
        s = out[-1].stats
        rounds += s.rounds
        rejected += s.drafted - s.accepted
    return counts, rounds, rejected


@pytest.fixture(scope="module")
def tiny_target():
    return tiny_model(V_E, layers=1, hidden=16, scale=2.0, seed=4)


CASES = {
    "temp1": SamplingParams(temp=1.0),
    "top_p": SamplingParams(temp=0.8, top_p=0.9),
    "top_k": SamplingParams(temp=1.2, top_k=3),
    "penalty": SamplingParams(temp=1.0, repetition_penalty=1.8),
}
SAMPLES = 2000


class TableDrafter(Drafter):
    """A drafter with no model: a fixed random table of logits per last token, processed
    by the same rule as the target's. Cheap, so deep chains run through the engine."""

    def __init__(self, seed=9):
        self.table = np.random.default_rng(seed).normal(size=(V_E, V_E)) * 1.5

    def reset(self, tokens, runner):
        self.seq = list(tokens)

    def extend(self, tokens):
        self.seq += list(tokens)

    def propose(self, k, params, rng, max_nodes=None):
        ctx, toks, qs = list(self.seq), [], []
        for _ in range(k):
            q = probs_from_logits(self.table[ctx[-1]], ctx, params)
            toks.append(int(rng.choice(V_E, p=q)))
            qs.append(q)
            ctx.append(toks[-1])
        return DraftTree.chain(toks, qs)


@pytest.mark.parametrize("case,depth", [("temp1", 2), ("temp1", 4), ("temp1", 8), ("top_p", 3), ("top_k", 3),
                                        ("penalty", 3)])
def test_engine_chains_are_exact(tiny_target, case, depth):
    """The first three tokens of replies whose rounds draft `depth` tokens (the reply is
    long enough that the engine does not cut the draft)."""
    params = CASES[case]
    engine = Engine(tiny_target, CharTokenizer(V_E), TableDrafter(), num_draft=depth, adaptive=False)
    counts, rounds, rejected = engine_counts(engine, params, SAMPLES, max_tokens=depth + 1)
    assert rounds >= SAMPLES and rejected > SAMPLES * 0.2  # drafted, and the rejection path ran
    assert pvalue(counts, exact_joint(tiny_target, params)) > P_MIN


@pytest.mark.parametrize("floor,pipeline", [(0.0, None), (0.3, False), (0.3, True)])
def test_engine_draft_model_chains_are_exact(tiny_target, floor, pipeline):
    """The real draft-model drafter's q rows (a perturbed copy of the target): all k
    steps queued, or stopped by confidence with the next step built before or after
    the read."""
    params = CASES["penalty"]
    draft = ModelDrafter(perturbed_copy(tiny_target, 0.6, seed=5), V_E, min_confidence=floor, pipeline=pipeline)
    engine = Engine(tiny_target, CharTokenizer(V_E), draft, num_draft=3, adaptive=False)
    counts, rounds, rejected = engine_counts(engine, params, SAMPLES, max_tokens=4)
    assert rounds >= SAMPLES and rejected > SAMPLES * 0.2
    assert pvalue(counts, exact_joint(tiny_target, params)) > P_MIN


class BranchingDrafter(Drafter):
    """A sampled chain from a draft model plus a deterministic copied sibling at the
    root and a sampled-chain duplicate avoided by the trie: a real branching tree."""

    def __init__(self):
        self.inner = TableDrafter()

    def reset(self, tokens, runner):
        self.seq = list(tokens)
        self.inner.reset(tokens, runner)

    def extend(self, tokens):
        self.seq += list(tokens)
        self.inner.extend(tokens)

    def propose(self, k, params, rng, max_nodes=None):
        tree = self.inner.propose(k, params, rng)
        tree = tree.add_branch([(self.seq[-1] + 1) % V_E, (self.seq[-1] + 2) % V_E])
        return tree.add_branch([(self.seq[-1] + 3) % V_E])


@pytest.mark.parametrize("case", ["temp1", "penalty"])
def test_engine_trees_are_exact(tiny_target, case):
    params = CASES[case]
    engine = Engine(tiny_target, CharTokenizer(V_E), BranchingDrafter(), num_draft=3, adaptive=False)
    counts, rounds, _ = engine_counts(engine, params, SAMPLES, max_tokens=4)
    assert rounds > 0
    assert pvalue(counts, exact_joint(tiny_target, params)) > P_MIN


def test_engine_lookup_branches_join_sampling_and_stay_exact(tiny_target):
    """Prompt lookup beside a draft model at temperature > 0 (copied tokens are point
    masses): exact, and copied tokens were kept."""
    params = CASES["temp1"]
    drafter = Composite(TableDrafter(), [LookupDrafter()])
    global PROMPT
    old, PROMPT = PROMPT, [1, 2, 1, 2, 1]
    try:
        engine = Engine(tiny_target, CharTokenizer(V_E), drafter, num_draft=2, adaptive=False)
        counts, rounds, _ = engine_counts(engine, params, SAMPLES, max_tokens=4)
        assert pvalue(counts, exact_joint(tiny_target, params)) > P_MIN
    finally:
        PROMPT = old


def head_drafter(model, feature):
    head = new_head(model, 1, feature_input=feature)
    return HeadDrafter(model, head, core_ids=[0, 1, 2], vocab_mode="dynamic", tail_capacity=2,
                       num_neighbours=1, min_confidence=0.0)


@pytest.mark.parametrize("feature", [False, True])
def test_engine_pruned_vocabulary_heads_are_exact(feature):
    """The head drafts over a pruned vocabulary (zeros outside it) and, feature-input,
    from the target's states."""
    model = tiny_model(V_E, layers=3, hidden=32, seed=7, scale=1.5)
    params = CASES["temp1"]
    engine = Engine(model, CharTokenizer(V_E), head_drafter(model, feature), num_draft=3, adaptive=False)
    counts, rounds, rejected = engine_counts(engine, params, SAMPLES, max_tokens=4)
    assert rounds > 0 and rejected > 0
    assert pvalue(counts, exact_joint(model, params)) > P_MIN


@pytest.mark.parametrize("broken", ["residual", "context"])
def test_the_engine_test_catches_wrong_rules(tiny_target, broken, monkeypatch):
    """Controls: a wrong residual, and the target's distribution built from a context
    off by one (it shows under the repetition penalty)."""
    params = CASES["temp1"] if broken == "residual" else CASES["penalty"]
    if broken == "residual":  # the host rule's residual and the device rule's (verify_device.py)
        monkeypatch.setattr(verify_mod, "_residual", resample_from_r)
        monkeypatch.setattr(verify_device, "residual_rows", lambda r, q: r)
    else:
        real = verify_mod.probs_from_logits
        monkeypatch.setattr(verify_mod, "probs_from_logits", lambda lg, ctx, pr: real(lg, ctx[:-1], pr))
        rows = verify_device.probs_rows
        monkeypatch.setattr(verify_device, "probs_rows",
                            lambda lg, ctxs, pr, **kw: rows(lg, [c[:-1] for c in ctxs], pr, **kw))
    engine = Engine(tiny_target, CharTokenizer(V_E), TableDrafter(), num_draft=3, adaptive=False)
    counts, _, _ = engine_counts(engine, params, SAMPLES, max_tokens=4)
    assert pvalue(counts, exact_joint(tiny_target, params)) < 1e-6


def test_probs_respect_top_k_and_top_p():
    logits = np.array([4.0, 3.0, 2.0, 1.0, 0.0])
    p = probs_from_logits(logits, [], SamplingParams(temp=1.0, top_k=2))
    assert (p[2:] == 0).all() and p[:2].sum() == pytest.approx(1.0)
    p = probs_from_logits(logits, [], SamplingParams(temp=1.0, top_p=0.5))
    assert p[0] == pytest.approx(1.0)
    p = probs_from_logits(logits, [0], SamplingParams(temp=1.0, repetition_penalty=2.0))
    assert p[0] < probs_from_logits(logits, [], SamplingParams(temp=1.0))[0]


@pytest.mark.parametrize("kw", [dict(temp=-0.1), dict(temp=float("nan")), dict(temp=float("inf")), dict(temp=1e-320),
                                dict(top_p=0.0), dict(top_p=1.5), dict(top_p=float("nan")), dict(top_k=-1),
                                dict(top_k=True), dict(repetition_penalty=0.0), dict(repetition_penalty=1e-320),
                                dict(repetition_penalty=float("inf")), dict(temp="1")])
def test_invalid_sampling_params(kw):
    from mlxspec.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError):
        SamplingParams(**kw).validated()
