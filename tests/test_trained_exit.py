"""The trained early exit (hierarchy/exit_adapter.py): the layer taps change no logits,
the fit recovers a map the data follow, greedy output equals plain and sampling is
exact while the exit refits between calls (with controls), its file survives kill -9,
and `mlxspec head info` lists it."""
import json
import os

import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner

import mlxspec.hierarchy.loop as loop
import mlxspec.hierarchy.state as state
from mlxspec.drafters.head_runner import HeadTargetRunner
from mlxspec.engine import Engine
from mlxspec.head.model import new_head
from mlxspec.hierarchy import exit_store
from mlxspec.hierarchy.exit_adapter import ExitAdapter, candidate_layers
from mlxspec.runtime.layered import LayeredModel
from mlxspec.runtime.target import TargetRunner
from mlxspec.sampling import SamplingParams
from test_drafter_matrix import make_drafter
from test_early_exit import SAMPLES, V_E, joint
from test_faults import kill_trials
from test_sampling import CASES, TableDrafter, engine_counts, pvalue
from tiny import CharTokenizer, tiny_model

V = 64


class Recorder:
    def __init__(self, layers):
        self.layers, self.seen = tuple(layers), []

    def observe(self, states, hn, prompt=False):
        self.seen.append(({m: np.array(h) for m, h in states.items()}, np.array(hn), prompt))


def reference(model, tokens, layers):
    lm = LayeredModel(model)
    h, out = lm.embed(tokens), {}
    for i in range(lm.num_layers):
        if i in layers:
            out[i] = np.array(h)
        h = lm.layers[i](h, "causal", None)
    hn = lm.norm(h)
    return out, np.array(hn), np.array(lm.logits(hn)[0])


@pytest.mark.parametrize("with_head", [False, True])
def test_taps_change_no_logits_and_hear_every_forward(with_head):
    model = tiny_model(V, layers=6, hidden=32, seed=2, arch="qwen2", scale=2.0)
    S = [5, 9, 1, 33, 7, 2, 40, 41]
    runs = []
    for tapped in (False, True):
        run = HeadTargetRunner(model, new_head(model, 2)) if with_head else TargetRunner(model)
        rec = Recorder([3, 5]) if tapped else None
        run.exit_tap = rec
        run.prefill(S[:4])
        a = np.array(run.forward(S[4:6]))
        b = np.array(run.forward_tree(S[6:8] + [3], [-1, 0]))  # a root and a chain of two
        runs.append((a, b, rec))
    (a0, b0, _), (a1, b1, rec) = runs
    np.testing.assert_array_equal(a0, a1)
    np.testing.assert_array_equal(b0, b1)
    assert [p for _, _, p in rec.seen] == [True, False, False]  # the prompt, then generated rows
    states = {m: np.concatenate([s[m] for s, _, _ in rec.seen], axis=1) for m in (3, 5)}
    hn = np.concatenate([h for _, h, _ in rec.seen], axis=1)
    ref_states, ref_hn, _ = reference(model, S + [3], (3, 5))
    for m in (3, 5):
        np.testing.assert_allclose(states[m], ref_states[m], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(hn, ref_hn, atol=1e-4, rtol=1e-4)


def test_the_fit_recovers_an_affine_map_and_a_strong_prior_keeps_the_untrained_exit():
    model = tiny_model(V, layers=4, hidden=32, seed=1, scale=2.0)
    lm = LayeredModel(model)
    rng = np.random.default_rng(0)
    A = mx.array(rng.normal(0, 0.3, (32, 32)).astype(np.float32))
    b = mx.array(rng.normal(0, 0.1, (32,)).astype(np.float32))
    fitted, prior = ExitAdapter(lm, [2], prior_rows=1e-3), ExitAdapter(lm, [2], prior_rows=1e9)
    for _ in range(4):
        h = mx.array(rng.normal(0, 1, (1, 100, 32)).astype(np.float32))
        y = lm.norm(h) @ A + b
        for ad in (fitted, prior):
            ad.observe({2: h}, y)
    assert fitted.refit() and prior.refit()
    h = mx.array(rng.normal(0, 1, (1, 10, 32)).astype(np.float32))
    np.testing.assert_allclose(np.array(fitted.state(2, h)), np.array(lm.norm(h) @ A + b), atol=1e-3)
    np.testing.assert_allclose(np.array(prior.state(2, h)), np.array(lm.norm(h)), atol=1e-3)
    assert candidate_layers(28) == (14, 21, 24) and candidate_layers(4, above=2) == (3,)


def test_greedy_with_the_trained_exit_equals_plain_while_it_refits():
    """Turns of one conversation on one engine: the exit refits between them and moves
    to the layer that pays; every reply equals plain greedy output."""
    tok = CharTokenizer(V)
    for arch, kind in (("llama", "head+lookup"), ("qwen2", "draft-model"), ("qwen3", "lookup")):
        target = tiny_model(V, layers=8, hidden=32, seed=1, arch=arch, scale=3.0)
        eng = Engine(target, tok, make_drafter(kind, target, target), num_draft=3, verify="early-exit",
                     adaptive=kind != "draft-model")  # the governor would stop a tiny draft model
        base = [int(t) for t in np.random.default_rng(3).integers(0, V, 6)]
        first = [r.token for r in Engine(target, tok).stream(base, SamplingParams(), max_tokens=12)]
        prompt = base + first + base  # the reply tends to repeat itself: lookup fires
        full = 0
        Ws = []
        for turn in range(4):
            ref = [r.token for r in Engine(target, tok).stream(prompt, SamplingParams(), max_tokens=32)]
            res = list(eng.stream(prompt, SamplingParams(), max_tokens=32))
            out = [r.token for r in res]
            assert out == ref, (arch, kind, turn)
            full += res[-1].stats.extra.get("full_verifications", 0)
            ex = eng._early_exit.exit if hasattr(eng, "_early_exit") else None
            Ws.append({m: None if w is None else np.array(w) for m, w in ex.W.items()} if ex else {})
            prompt = prompt + out + [turn + 1, turn + 2]
        assert full > 0 and ex.fits >= 2, (arch, kind, full, ex.fits)
        m = ex.layers[-1]
        assert Ws[-1][m] is not None and not np.array_equal(Ws[-1][m], Ws[-2][m])  # it changed


# -- sampling: exact while the exit changes between calls ---------------------------------
def trained_engine(model, drafter, params):
    eng = Engine(model, CharTokenizer(V_E), drafter, num_draft=3, adaptive=False, verify="early-exit")
    eng.tentative_length = 4
    st = eng.__dict__.setdefault("_early_exit", state.ExitState())
    st.exit = ExitAdapter(LayeredModel(model), [1], prior_rows=1.0)
    rng = np.random.default_rng(5)  # a start far from the untrained exit: the checks differ
    h = mx.array(rng.normal(0, 2, (1, 200, 16)).astype(np.float32))
    st.exit.observe({1: h}, mx.array(rng.normal(0, 2, (1, 200, 16)).astype(np.float32)))
    st.exit.refit()
    return eng


@pytest.fixture(scope="module")
def two_layer():
    return tiny_model(V_E, layers=2, hidden=16, scale=2.0, seed=4)


def test_sampling_with_the_trained_exit_is_exact(two_layer):
    params = CASES["temp1"]
    eng = trained_engine(two_layer, TableDrafter(), params)
    counts, rounds, _ = engine_counts(eng, params, SAMPLES, max_tokens=5)
    ex = eng._early_exit.exit
    assert rounds >= SAMPLES and ex.fits > 10  # it refit between calls
    assert pvalue(counts, joint(two_layer, params)) > 1e-3


def test_the_sampling_test_catches_an_exit_that_changes_inside_a_round(two_layer, monkeypatch):
    """Control: the proposal rows of the full pass taken from another exit than the one
    that drew the tentative tokens (what a refit inside a round would do)."""
    real = loop.exit_rows

    def other_exit(logits, contexts, params):
        st_exit = eng._early_exit.exit
        W, st_exit.W = st_exit.W, {m: None for m in st_exit.W}
        try:  # the untrained exit's rows for the same positions
            lv = eng._early_exit.levels
            h_m = mx.concatenate(lv._hm, axis=1)[:, -logits.shape[0]:] if lv._hm else None
            rows = logits if h_m is None else lv.lm.logits(st_exit.state(lv.m, h_m))[0].astype(mx.float32)
        finally:
            st_exit.W = W
        return real(rows, contexts, params)

    params = CASES["temp1"]
    eng = trained_engine(two_layer, TableDrafter(), params)
    monkeypatch.setattr(loop, "exit_rows", other_exit)
    counts, _, _ = engine_counts(eng, params, 800, max_tokens=5)
    assert pvalue(counts, joint(two_layer, params)) < 1e-6


# -- on disk -----------------------------------------------------------------------------
@pytest.fixture()
def folder(tmp_path):
    from tiny_folder import make_model_dir

    return make_model_dir(tmp_path / "tiny")


SAVE_LOOP = """
import os
from pathlib import Path
import mlx.core as mx
from mlxspec.loading import load_model
from mlxspec.runtime.layered import LayeredModel
from mlxspec.hierarchy import exit_store
from mlxspec.hierarchy.exit_adapter import ExitAdapter

folder = Path(os.environ["FOLDER"])
lm = LayeredModel(load_model(str(folder)).model)
ad = ExitAdapter(lm)
fp = lm.fingerprint()
print("ready", flush=True)
n = 0
while True:
    n += 1
    for m in ad.layers:
        ad.G[m] = mx.full(ad.G[m].shape, float(n))
        ad.B[m] = mx.full(ad.B[m].shape, float(n))
    ad.rows = 10 * n
    exit_store.save(exit_store.exit_path(folder), ad, fp)
"""


def test_kill_at_random_moments_leaves_a_whole_exit(folder):
    from mlxspec.loading import load_model

    lm = LayeredModel(load_model(str(folder)).model)
    path = exit_store.exit_path(folder)
    seen = []

    def check(trial):
        ad = ExitAdapter(lm)
        if not exit_store.load(path, ad, lm.fingerprint()):
            seen.append(0)
            return
        n = ad.rows // 10
        for m in ad.layers:  # every layer's statistics of one and the same save
            assert float(ad.G[m].min()) == float(ad.G[m].max()) == n
            assert float(ad.B[m].min()) == n
        seen.append(n)

    kill_trials("trained exit save", SAVE_LOOP, check, env=dict(os.environ, FOLDER=str(folder)), trials=6,
                max_delay=0.8, watch=[path.parent])
    assert max(seen) > 0


def test_generate_learns_the_exit_and_head_info_lists_it(folder):
    from mlxspec.cli.main import cli

    run = CliRunner()
    for _ in range(3):
        r = run.invoke(cli, ["generate", "-m", str(folder), "--verify", "early-exit", "--draft", "lookup",
                             "-n", "40", "hello hello hello"])
        assert r.exit_code == 0, r.output
    r = run.invoke(cli, ["head", "info", "-m", str(folder), "--json"])
    ex = json.loads(r.output)["exit"]
    assert ex is not None and ex["rows"] > 0 and ex["fits"] >= 1
    r = run.invoke(cli, ["head", "info", "-m", str(folder)])
    assert "trained exit" in r.output and "rows" in r.output
    path = exit_store.exit_path(folder)
    path.write_bytes(b"not a safetensors file")  # damaged: one line, not a traceback
    r = run.invoke(cli, ["generate", "-m", str(folder), "--verify", "early-exit", "--draft", "lookup", "-n", "4", "hi"])
    assert r.exit_code != 0 and "trained exit" in r.output and "Traceback" not in r.output
    r = run.invoke(cli, ["head", "reset", "-m", str(folder)])
    assert r.exit_code == 0 and not path.exists()
