"""Relaxed verification (mlxspec/relaxed.py): weight 0 or budget 0 is exact verification,
the sampler draws exactly from p_ens (chi-square, with controls that fail), the budget
holds at every position, and the reported counters are right on constructed cases."""
import numpy as np
import pytest

import mlxspec.verify as verify_mod
from mlxspec.drafters.compose import Composite
from mlxspec.drafters.draft_model import ModelDrafter
from mlxspec.drafters.head import HeadDrafter
from mlxspec.drafters.lookup import LookupDrafter
from mlxspec.engine import Engine
from mlxspec.errors import InvalidParameterError
from mlxspec.head.model import new_head
from mlxspec.relaxed import Relaxed, ensemble, greedy_view, tv
from mlxspec.relaxed_device import DeviceBlend
from mlxspec.sampling import SamplingParams, probs_from_logits
from mlxspec.tree import DraftTree
from mlxspec.verify import verify
from test_sampling import V_M, markov, pvalue
from test_sampling import run_markov as sampling_markov
from tiny import CharTokenizer, perturbed_copy, tiny_model

P_MIN = 1e-3
V = 64


# -- the ensemble and the budget ----------------------------------------------------------
def rand_dist(rng, n, zeros=0):
    p = np.exp(rng.normal(size=n) * 2)
    if zeros:
        p[rng.choice(n, zeros, replace=False)] = 0.0
    return p / p.sum()


def test_ensemble_is_the_target_at_weight_0_and_keeps_its_mass_off_the_draft_support():
    rng = np.random.default_rng(0)
    p, q = rand_dist(rng, 12, zeros=2), rand_dist(rng, 12, zeros=5)
    assert ensemble(p, q, 0.0) is p
    e = ensemble(p, q, 0.6)
    assert abs(e.sum() - 1) < 1e-12
    off = q == 0
    assert np.allclose(e[off], p[off])  # the target's mass where the draft has none
    assert np.all(e[p == 0] == 0)  # nothing the target forbids
    on = ~off & (p > 0)
    want = p[on] ** 0.4 * q[on] ** 0.6
    assert np.allclose(e[on], want / want.sum() * p[~off].sum())


def test_the_budget_holds_for_every_blend():
    rng = np.random.default_rng(1)
    for _ in range(300):
        p, q = rand_dist(rng, 20, zeros=int(rng.integers(0, 4))), rand_dist(rng, 20, zeros=int(rng.integers(0, 8)))
        r = Relaxed(float(rng.uniform(0, 0.95)), float(rng.uniform(0, 0.6)))
        dist, d, over = r.blend(p, q)
        assert (dist is p and d == 0.0) or (0 < d == pytest.approx(tv(dist, p)) and d <= r.budget)
        assert over == (tv(ensemble(p, q, r.weight), p) > r.budget)


@pytest.mark.parametrize("kw", [dict(weight=1.0), dict(weight=-0.1), dict(weight=float("nan")),
                                dict(budget=1.5), dict(budget=-1), dict(weight=True)])
def test_invalid_relax_settings(kw):
    with pytest.raises(InvalidParameterError):
        Relaxed.checked(kw.get("weight"), kw.get("budget"))


def test_relax_settings_need_relaxed_mode():
    model = tiny_model(V, layers=1, hidden=16)
    with pytest.raises(InvalidParameterError):
        Engine(model, CharTokenizer(V), verify="exact", relax_weight=0.3)
    Engine(model, CharTokenizer(V), verify="relaxed", relax_weight=0.3, relax_budget=0.2)


# -- sampling draws exactly from p_ens: a Markov target and drafter -----------------------
def ens_matrix(p_logits, q_logits, params, weight):
    P = [probs_from_logits(p_logits[a], [], params) for a in range(V_M)]
    Q = [probs_from_logits(q_logits[a], [], params) for a in range(V_M)]
    return np.stack([ensemble(P[a], Q[a], weight) for a in range(V_M)])


def run_markov(p_logits, q_logits, params, depth, n_tokens, n, seed, rule, branch=False):
    """test_sampling's runner with another rule; `branch`: a copied point-mass sibling at
    the root. depth >= n_tokens: every emitted token is at a position that has a draft."""
    copy = (lambda seq: (seq[-1] + 1) % V_M) if branch else None
    return sampling_markov(p_logits, q_logits, params, depth, n_tokens, n, seed, branch=copy, rule=rule)


def last_pair_counts(seqs):
    counts = np.zeros((V_M, V_M))
    np.add.at(counts, (seqs[:, -2], seqs[:, -1]), 1)
    return counts


def chain_joint(E, n_tokens):
    marg = np.eye(V_M)[0]
    for _ in range(n_tokens - 2):
        marg = marg @ E
    return (marg @ E)[:, None] * E


PARAMS = SamplingParams(temp=1.0)
WEIGHT = 0.6


def relaxed_rule(weight=WEIGHT, budget=1.0):
    r = Relaxed(weight, budget)
    return lambda logits, tree, seq, params, rng: r.verify(logits, tree, seq, params, rng, {})


@pytest.mark.parametrize("depth,branch", [(3, False), (4, True)])
def test_relaxed_sampling_draws_from_the_ensemble(depth, branch):
    p, q = markov(1), markov(2)
    E = ens_matrix(p, q, PARAMS, WEIGHT)
    P = np.stack([probs_from_logits(p[a], [], PARAMS) for a in range(V_M)])
    assert np.abs(E - P).sum() > 0.5  # the ensemble differs enough for the controls to show
    seqs = run_markov(p, q, PARAMS, depth, depth, 6000, seed=depth, rule=relaxed_rule(), branch=branch)
    assert pvalue(last_pair_counts(seqs), chain_joint(E, depth)) > P_MIN


def test_the_ensemble_test_catches_exact_verification_and_a_wrong_residual(monkeypatch):
    p, q = markov(1), markov(2)
    E = ens_matrix(p, q, PARAMS, WEIGHT)
    seqs = run_markov(p, q, PARAMS, 3, 3, 6000, seed=3, rule=verify)  # the target's rule
    assert pvalue(last_pair_counts(seqs), chain_joint(E, 3)) < 1e-6
    monkeypatch.setattr(verify_mod, "_residual", lambda r, q, x: r)  # resample from p_ens
    seqs = run_markov(p, q, PARAMS, 3, 3, 6000, seed=3, rule=relaxed_rule())
    assert pvalue(last_pair_counts(seqs), chain_joint(E, 3)) < 1e-6


# -- through the engine: weight 0 / budget 0 is exact --------------------------------------
@pytest.fixture(scope="module")
def model():
    return tiny_model(V, layers=2, hidden=32, seed=3, scale=3.0)


def drafters(model):
    draft = perturbed_copy(model, 0.3, seed=5)
    yield "draft-model", lambda: ModelDrafter(draft, V, min_confidence=0.0)
    yield "tree", lambda: Composite(ModelDrafter(draft, V, min_confidence=0.0), [LookupDrafter()])
    head = new_head(model, 1)
    yield "head", lambda: HeadDrafter(model, head, core_ids=list(range(20)), vocab_mode="dynamic",
                                      tail_capacity=4, num_neighbours=1, min_confidence=0.0)


PROMPT = [5, 9, 5, 9, 1, 5, 9, 5]


def run(model, make, params, seed=0, n=40, **kw):
    engine = Engine(model, CharTokenizer(V), make(), num_draft=3, adaptive=False, **kw)
    out = list(engine.stream(PROMPT, params, max_tokens=n, seed=seed))
    return [r.token for r in out], out[-1].stats


@pytest.mark.parametrize("params", [SamplingParams(), SamplingParams(temp=0.8, top_p=0.95)],
                         ids=["greedy", "sampled"])
def test_weight_0_or_budget_0_is_exact_verification(model, params):
    refused = 0
    for name, make in drafters(model):
        for seed in range(2):
            exact, _ = run(model, make, params, seed)
            for kw in (dict(relax_weight=0.0), dict(relax_weight=0.7, relax_budget=0.0)):
                got, stats = run(model, make, params, seed, verify="relaxed", **kw)
                assert got == exact, (name, kw)
                assert stats.extra.get("relaxed_tokens", 0) == 0 and stats.extra.get("tv_max", 0) == 0
                refused += stats.extra.get("over_budget", 0)
    assert refused > 0  # the budget did refuse blends (and not only p_ens == p cases)


def test_relaxed_greedy_departs_and_reports_it(model):
    """A real blend changes some tokens, keeps more drafts, and every count agrees."""
    for name, make in drafters(model):
        if name == "head":
            continue  # an untrained head's q is noise; the counts are checked below anyway
        exact, es = run(model, make, SamplingParams(), n=60)
        got, rs = run(model, make, SamplingParams(), n=60, verify="relaxed", relax_weight=0.7, relax_budget=1.0)
        x = rs.extra
        assert got != exact and x["relaxed_tokens"] > 0
        assert rs.acceptance_rate > es.acceptance_rate
        assert x["relaxed_tokens"] <= x["relaxed_positions"] <= x["relax_checked"] <= len(got)
        assert 0 < x["tv_mean"] <= x["tv_max"] <= 1.0 and x["over_budget"] == 0
        assert rs.as_dict()["relaxed_tokens"] == x["relaxed_tokens"]  # --json and the bench


def test_the_budget_holds_at_every_engine_position(model, monkeypatch):
    seen = []
    blend = Relaxed.blend

    def spy(self, p, q):
        out = blend(self, p, q)
        seen.append((tv(out[0], p), out[0] is p, out[2]))
        return out

    device_blend = DeviceBlend._blend

    def device_spy(self, p_rows, q):  # the engine's rows are on the device (relaxed_device.py)
        out = device_blend(self, p_rows, q)
        r, _, over, used = (np.array(x) for x in out)
        p = np.array(p_rows)
        seen.extend((tv(r[i].astype(np.float64), p[i].astype(np.float64)), not used[i], bool(over[i]))
                    for i in range(len(used)))
        return out

    monkeypatch.setattr(Relaxed, "blend", spy)
    monkeypatch.setattr(DeviceBlend, "_blend", device_spy)
    for params in (SamplingParams(), SamplingParams(temp=1.0)):
        for name, make in drafters(model):
            _, stats = run(model, make, params, n=50, verify="relaxed", relax_weight=0.8, relax_budget=0.15)
            assert stats.extra["tv_max"] <= 0.15 + 1e-6  # float32 rows on the device
    assert seen and all(d <= 0.15 + 1e-6 for d, _, _ in seen)
    assert any(over for _, _, over in seen) and any(not is_p for _, is_p, _ in seen)  # both paths ran


# -- the counters on constructed cases ------------------------------------------------------
def onehot_logits(best, n=6, second=None, gap=1.0):
    row = np.zeros(n)
    row[best] = 3.0
    if second is not None:
        row[second] = 3.0 - gap
    return row


def test_greedy_counts_on_a_constructed_case():
    """Position 0: the target prefers 1, the draft (strongly) 2: the blend picks 2, the
    draft token is kept, one relaxed token. Position 1: both prefer 4: kept, no change.
    Position 2 (after the leaf): no draft, exact."""
    params = SamplingParams()
    n = 6
    target = np.stack([onehot_logits(1, n, second=2, gap=0.5), onehot_logits(4, n), onehot_logits(0, n)])
    q0 = probs_from_logits(onehot_logits(2, n) * 3, [], greedy_view(params))
    q1 = probs_from_logits(onehot_logits(4, n), [], greedy_view(params))
    tree = DraftTree.chain([2, 4], [q0, q1])
    stats = {}
    path, nxt = Relaxed(0.5, 1.0).verify(target, tree, [3], params, None, stats)
    assert path == [0, 1] and nxt == 0
    p0 = probs_from_logits(target[0], [], greedy_view(params))
    p1 = probs_from_logits(target[1], [], greedy_view(params))
    d0, d1 = tv(ensemble(p0, q0, 0.5), p0), tv(ensemble(p1, q1, 0.5), p1)
    assert stats["relax_checked"] == 3 and stats["relaxed_tokens"] == 1 and stats["relaxed_positions"] == 2
    assert stats["tv_mean"] == pytest.approx((d0 + d1) / 3) and stats["tv_max"] == pytest.approx(max(d0, d1))
    # exact verification rejects the draft at once
    assert verify(target, tree, [3], params) == ([], 1)
    # a budget below position 0's TV: verified exactly there
    stats = {}
    budget = (d0 + d1) / 2 if d1 < d0 else d0 / 2
    assert Relaxed(0.5, budget).verify(target, tree, [3], params, None, stats) == ([], 1)
    assert stats["over_budget"] == 1 and stats["relaxed_tokens"] == 0 and stats["relax_checked"] == 1


def test_sampling_counts_on_a_constructed_case():
    """A copied-only position (q None) is exact; a drafted one is relaxed with its TV."""
    params = SamplingParams(temp=1.0)
    rng = np.random.default_rng(0)
    n = 6
    logits = rng.normal(size=(3, n))
    q = probs_from_logits(rng.normal(size=n), [], params)
    x = int(np.argmax(q))
    copied = DraftTree([x], [-1], [None])  # a point mass: exact at its position
    stats = {}
    Relaxed(0.5, 1.0).verify(logits, copied, [0], params, rng, stats)
    assert stats["relaxed_positions"] == 0 and stats["tv_max"] == 0.0
    stats = {}
    tree = DraftTree([x], [-1], [q])
    path, _ = Relaxed(0.5, 1.0).verify(logits, tree, [0], params, rng, stats)
    p0 = probs_from_logits(logits[0], [], params)
    d0 = tv(ensemble(p0, q, 0.5), p0)
    assert stats["relaxed_positions"] == stats["relaxed_tokens"] == 1
    assert stats["relax_checked"] == 1 + len(path)
    assert stats["tv_mean"] == pytest.approx(d0 / stats["relax_checked"])
