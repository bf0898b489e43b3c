"""The adapting head drafter: lossless while the head changes between calls (greedy equals
plain, sampling exact), the head cache rebuilt after an update, the end_reply hook
reached through the response layer and the lookup composition, and the load path
(`draft="head"` on a model without a head starts one; adapt=False does not)."""
import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlxspec.adapt import Adapter, state
from mlxspec.drafters.adaptive import AdaptiveHeadDrafter, AdaptiveRunner
from mlxspec.drafters.compose import Composite
from mlxspec.drafters.head_runner import HeadTargetRunner
from mlxspec.drafters.lookup import LookupDrafter
from mlxspec.engine import Engine
from mlxspec.sampling import SamplingParams
from tiny import CharTokenizer, tiny_model

V = 64


def fingerprint(head) -> float:
    return float(sum(mx.sum(mx.abs(v)).item() for _, v in tree_flatten(head.parameters())))


def adaptive(model, folder, core=24, steps=3, kind=None, **kw):
    a = Adapter.open(model, folder, None, exit_layer=2, core_size=core,
                     new_head_kw={"kind": kind} if kind else None)
    d = AdaptiveHeadDrafter(model, a, tail_capacity=8, num_neighbours=2, min_confidence=0.0,
                            budget_fraction=1000.0, **kw)
    d.max_steps = steps  # a few steps per reply, whatever the clock says
    return d


@pytest.mark.parametrize("kind,with_lookup", [("linear", False), ("linear", True), ("block", False)])
def test_greedy_equals_plain_while_the_head_learns(tmp_path, kind, with_lookup):
    model = tiny_model(V, layers=4, hidden=32, seed=1, scale=3.0)
    tok = CharTokenizer(V)
    d = adaptive(model, tmp_path, kind=kind)
    drafter = Composite(d, [LookupDrafter()]) if with_lookup else d
    eng = Engine(model, tok, drafter, num_draft=4, adaptive=False)
    rng = np.random.default_rng(0)
    seen, rounds = [fingerprint(d.head)], 0
    for i in range(5):
        prompt = [int(t) for t in rng.integers(0, V, 6)]
        ref = [r.token for r in Engine(model, tok).stream(prompt, SamplingParams(), max_tokens=20)]
        out = list(eng.stream(prompt, SamplingParams(), max_tokens=20))
        assert [r.token for r in out] == ref, i
        rounds += out[-1].stats.rounds
        seen.append(fingerprint(d.head))
    assert rounds > 0
    assert len(set(seen)) == len(seen)  # the head changed after every reply (end_reply ran)
    assert d.adapter.counters.updates == 5 and len(d.adapter.counters.acceptance) == 5
    assert state.load(tmp_path).counters.updates == 5  # saved after each update


@pytest.mark.parametrize("kind,root", [("linear", 4), ("block", 2)])
def test_a_linear_heads_tree_is_wider_at_the_root(tmp_path, kind, root):
    model = tiny_model(V, layers=4, hidden=32, seed=1, scale=3.0)
    assert adaptive(model, tmp_path, kind=kind).root_width == root
    assert adaptive(model, tmp_path / "n", kind=kind, root_width=2).root_width == 2


def test_head_cache_is_rebuilt_after_an_update(tmp_path):
    """After an update the head cache equals one computed with the new weights from
    scratch (the old one was computed with the old weights: the control)."""
    model = tiny_model(V, layers=4, hidden=32, seed=2, scale=3.0)
    d = adaptive(model, tmp_path, kind="block")  # the linear head keeps no cache
    eng = Engine(model, CharTokenizer(V), d, num_draft=3, adaptive=False)
    prompt = list(range(3, 15))
    list(eng.stream(prompt, SamplingParams(), max_tokens=16))
    run = eng.runner
    assert isinstance(run, AdaptiveRunner)

    def fresh_keys():
        fresh = HeadTargetRunner(model, d.head)
        fresh.prefill(d._seq[: run.length])
        return np.array(fresh.head_cache.keys[..., : run.length, :])

    def keys():
        return np.array(run.head_cache.keys[..., : run.head_cache.offset, :])

    np.testing.assert_allclose(keys(), fresh_keys(), atol=1e-4)  # refreshed by end_reply
    d.adapter.update(10.0, max_steps=5, save=False)  # the head changes, nothing refreshed
    assert run.head_cache.offset == run.length
    assert not np.allclose(keys(), fresh_keys(), atol=1e-4)
    d.refresh()
    np.testing.assert_allclose(keys(), fresh_keys(), atol=1e-4)
    # with the history dropped the states are recomputed, same result
    run._hist = []
    d.refresh()
    np.testing.assert_allclose(keys(), fresh_keys(), atol=1e-4)


def test_frozen_head_never_changes(tmp_path):
    model = tiny_model(V, layers=4, hidden=32, seed=1, scale=3.0)
    d = adaptive(model, tmp_path, learn=False)
    before = fingerprint(d.head)
    eng = Engine(model, CharTokenizer(V), d, num_draft=3, adaptive=False)
    for p in ([1, 2, 3, 4], [5, 6, 7, 8]):
        list(eng.stream(p, SamplingParams(), max_tokens=12))
    assert fingerprint(d.head) == before and d.adapter.counters.updates == 0
    assert state.load(tmp_path) is None


def test_cancelled_reply_does_not_train(tmp_path):
    model = tiny_model(V, layers=4, hidden=32, seed=1, scale=3.0)
    d = adaptive(model, tmp_path)
    eng = Engine(model, CharTokenizer(V), d, num_draft=3, adaptive=False)
    stream = eng.stream([1, 2, 3, 4], SamplingParams(), max_tokens=30)
    next(stream), next(stream)
    stream.close()
    assert d.adapter.counters.updates == 0


def test_sampling_stays_exact_while_the_head_changes(tmp_path):
    """The joint of the first three sampled tokens matches the target's exact joint while
    the head (pruned vocabulary) takes an optimiser step after every reply."""
    import test_sampling as ts

    model = tiny_model(ts.V_E, layers=3, hidden=32, seed=7, scale=1.5)
    a = Adapter.open(model, tmp_path, None, exit_layer=1, core_size=3)
    d = AdaptiveHeadDrafter(model, a, tail_capacity=2, num_neighbours=1, min_confidence=0.0,
                            budget_fraction=1000.0)
    d.max_steps, d.save = 1, False
    params = ts.CASES["temp1"]
    engine = Engine(model, CharTokenizer(ts.V_E), d, num_draft=3, adaptive=False)
    before = fingerprint(d.head)
    counts, rounds, rejected = ts.engine_counts(engine, params, 1500, max_tokens=4)
    assert rounds > 0 and rejected > 0 and a.counters.updates >= 1000
    assert fingerprint(d.head) != before
    assert ts.pvalue(counts, ts.exact_joint(model, params)) > ts.P_MIN


# -- the load path ----------------------------------------------------------------------
@pytest.fixture()
def folder(tmp_path):
    from tiny_folder import make_model_dir

    return make_model_dir(tmp_path / "tiny")


def test_draft_head_without_a_head_starts_one(folder, monkeypatch):
    import mlxspec
    from mlxspec.errors import HeadLoadError

    monkeypatch.delenv("MLXSPEC_ADAPT", raising=False)
    with pytest.raises(HeadLoadError):
        mlxspec.load(str(folder), draft="head", adapt=False)
    eng = mlxspec.load(str(folder), draft="head")  # adaptation on by default
    assert eng.draft_name == "head:adapting+lookup"
    plain = mlxspec.load(str(folder), draft="none")
    for p in ("w3 w4 w5 w6", "w7 w8 w9"):
        a = mlxspec.generate(eng, p, max_tokens=12, chat_template=False)
        assert a == mlxspec.generate(plain, p, max_tokens=12, chat_template=False)
    assert state.adapted_path(folder).is_file()  # the first run made a head
    # auto uses a head made only by adaptation once its measured acceptance pays ...
    adapter = eng.drafter.primary.adapter
    for acc, name in ((0.05, "lookup"), (0.3, "head:adapting+lookup")):
        adapter.counters.acceptance = [acc] * 4
        adapter.save()
        assert mlxspec.load(str(folder), draft="auto").draft_name == name, acc
    # ... but adapts a trained head further; with adaptation off it loads it as it is
    import shutil
    for ext in (".safetensors", ".json"):
        shutil.copy(state.adapted_path(folder).with_suffix(ext), folder / "heads" / f"trained{ext}")
    assert mlxspec.load(str(folder), draft="auto").draft_name.startswith("head:adapting")
    monkeypatch.setenv("MLXSPEC_ADAPT", "0")
    assert mlxspec.load(str(folder), draft="auto").draft_name.startswith("head:trained")
