"""Early-layer draft head: shared-cache verification, lossless greedy, exact sampling,
head files (round trip, corrupt, mismatched) and training/resume, on tiny random models."""
from collections import Counter

import mlx.core as mx
import numpy as np
import pytest

from mlxspec.runtime.layered import LayeredModel
from mlxspec.drafters.compose import Composite
from mlxspec.drafters.head import DEFAULT_TREE_FRONTIER, DEFAULT_TREE_WIDTH, HeadDrafter, find_heads, load_head_drafter
from mlxspec.drafters.lookup import DEFAULT_LOOKUP_LEN, LookupDrafter
from mlxspec.engine import Engine
from mlxspec.errors import HeadLoadError
from mlxspec.head.model import new_head
from mlxspec.sampling import SamplingParams, probs_from_logits
from mlxspec.runtime.target import TargetRunner
from tiny import CharTokenizer, tiny_model

V = 64
# Shared-cache verification runs the very same ops as a plain forward (layers 0..k-1
# once, then k..L-1); float32 reassociation across different batch shapes is the only
# difference. Stated tolerance: max |logit difference| <= 1e-4.
LOGIT_TOL = 1e-4


def make_drafter(model, k=2, core=24, mode="dynamic", tail=16, min_conf=0.0, ffn=1.0, feature=False,
                 width=DEFAULT_TREE_WIDTH, lookup=DEFAULT_LOOKUP_LEN, frontier=DEFAULT_TREE_FRONTIER):
    """A random head; by default as shipped (when greedy: the chain with each step's
    runner-up as a leaf, plus copied tokens). Tests of the chain itself pass width=1 and
    lookup=0; trees are in test_tree.py too."""
    head = new_head(model, k, ffn, feature_input=feature)
    if feature:  # a random feature path, so a wrong feature would change the drafts
        d = head.config.hidden_size
        w = head.fuse.weight
        head.fuse.weight = mx.concatenate([w[:, :d], 0.5 * mx.random.normal((d, d), key=mx.random.key(7))], axis=1)
    d = HeadDrafter(model, head, core_ids=list(range(core)), vocab_mode=mode,
                    tail_capacity=tail, num_neighbours=2, min_confidence=min_conf, tree_width=width,
                    tree_frontier=frontier)
    return Composite(d, [LookupDrafter(lookup)]) if lookup else d


def toks(engine, prompt, n=30, params=SamplingParams(), **kw):
    return [r.token for r in engine.stream(prompt, params, max_tokens=n, **kw)]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_layered_model_matches_mlx_lm(arch):
    from mlx_lm.models.cache import make_prompt_cache

    model = tiny_model(V, layers=4, hidden=32, seed=3, arch=arch)
    lm = LayeredModel(model)
    x = mx.array([[1, 5, 9, 2, 7]], dtype=mx.uint32)
    ref = model(x)
    c = make_prompt_cache(model)
    h = lm.run_layers(lm.embed(x), 0, 2, c)
    got = lm.logits(lm.norm(lm.run_layers(h, 2, 4, c)))
    assert float(mx.abs(got - ref).max()) <= LOGIT_TOL
    assert [ci.offset for ci in c] == [5] * 4
    assert lm.tied == (arch == "llama")


@pytest.mark.parametrize("arch,feature", [("llama", False), ("qwen2", False), ("qwen2", True)])
def test_shared_cache_verification_equals_full_forward(arch, feature):
    """Random rounds of draft / verify / trim: the runner's logits equal a plain
    TargetRunner's within LOGIT_TOL, and every layer's cache stays consistent."""
    model = tiny_model(V, layers=4, hidden=32, seed=1, arch=arch, scale=2.0)
    d = make_drafter(model, k=2, feature=feature, width=1, lookup=0)  # chains (trees: test_tree.py)
    runner, ref = d.make_runner(model), TargetRunner(model)
    rng = np.random.default_rng(0)
    prompt = [int(t) for t in rng.integers(0, V, 13)]
    a, b = runner.prefill(prompt, chunk_size=5), ref.prefill(prompt)
    assert float(mx.abs(a - b).max()) <= LOGIT_TOL
    seq = prompt + [int(mx.argmax(b).item())]
    d.reset(seq, runner)
    for _ in range(12):
        k = int(rng.integers(1, 5))
        draft = d.propose(k, SamplingParams(), rng).tokens
        la = runner.forward([seq[-1]] + draft)
        lb = ref.forward([seq[-1]] + draft)
        assert float(mx.abs(la - lb).max()) <= LOGIT_TOL
        n = int(rng.integers(0, len(draft) + 1))
        runner.trim(len(draft) - n)
        ref.trim(len(draft) - n)
        nxt = int(rng.integers(0, V))
        d.accept(draft[:n], nxt)
        seq += draft[:n] + [nxt]
        assert runner.length == ref.length == len(seq) - 1
        assert runner.low_len == runner.length
        assert {c.offset for c in runner.cache} | {runner.head_cache.offset} == {runner.length}
    assert runner.reused > 0  # the lower layers really were skipped for drafted tokens


def test_forward_with_other_tokens_than_drafted_recomputes():
    model = tiny_model(V, layers=4, hidden=32, seed=2)
    d = make_drafter(model)
    runner, ref = d.make_runner(model), TargetRunner(model)
    runner.prefill([1, 2, 3]), ref.prefill([1, 2, 3])
    d.reset([1, 2, 3, 4], runner)
    draft = d.propose(3, SamplingParams(), np.random.default_rng(0)).tokens
    other = [4, (draft[0] + 1) % V, 9]
    assert float(mx.abs(runner.forward(other) - ref.forward(other)).max()) <= LOGIT_TOL


@pytest.mark.parametrize("arch,feature", [("llama", False), ("qwen2", False), ("llama", True)])
@pytest.mark.parametrize("mode", ["full", "static", "dynamic"])
# a chain; as shipped (chain + runner-up leaves); an EAGLE-2 tree (3 nodes per level)
@pytest.mark.parametrize("width,frontier", [(1, 1), (DEFAULT_TREE_WIDTH, DEFAULT_TREE_FRONTIER), (3, 3)])
def test_greedy_head_equals_plain(arch, feature, mode, width, frontier):
    for seed in range(2):
        model = tiny_model(V, layers=4, hidden=32, seed=seed, arch=arch, scale=3.0)
        tok = CharTokenizer(V)
        prompt = [int(t) for t in np.random.default_rng(seed).integers(0, V, 5 + seed)]
        ref = toks(Engine(model, tok), prompt)
        for k in (1, 3, 6):
            d = make_drafter(model, k=2, mode=mode, feature=feature, width=width, frontier=frontier)
            eng = Engine(model, tok, d, num_draft=k, draft_name="head", adaptive=False)
            out = list(eng.stream(prompt, SamplingParams(), max_tokens=30))
            assert [r.token for r in out] == ref
            assert out[-1].stats.rounds > 0
            # a second call reuses the cache (common prefix) and stays lossless
            assert toks(eng, prompt) == ref


def test_a_wide_root_guesses_more_first_tokens_and_stays_lossless():
    """root_width 4: the root's four likeliest children are verified (the rest of the tree
    keeps width 2), and greedy output is the target's."""
    model = tiny_model(V, layers=4, hidden=32, seed=5, arch="qwen2", scale=3.0)
    tok = CharTokenizer(V)
    prompt = [3, 9, 14, 2, 7]
    ref = toks(Engine(model, tok), prompt)
    head = new_head(model, 2, 1.0)
    for root, roots in ((None, 2), (4, 4), (1, 2)):  # never narrower than the tree
        d = HeadDrafter(model, head, core_ids=list(range(V)), vocab_mode="static", num_neighbours=0,
                        min_confidence=0.0, root_width=root)
        d.reset(prompt, d.make_runner(model))
        d._runner.prefill(prompt)
        tree = d.propose(3, SamplingParams(), np.random.default_rng(0), max_nodes=64)
        assert tree.parents.count(-1) == roots
        eng = Engine(model, tok, d, num_draft=3, draft_name="head", adaptive=False)
        assert toks(eng, prompt) == ref


def test_repetition_penalty_greedy_lossless():
    model = tiny_model(V, layers=4, hidden=32, seed=5, scale=3.0)
    params = SamplingParams(repetition_penalty=1.5)
    ref = toks(Engine(model, CharTokenizer(V)), [1, 2, 3], params=params)
    eng = Engine(model, CharTokenizer(V), make_drafter(model), num_draft=4, draft_name="h", adaptive=False)
    assert toks(eng, [1, 2, 3], params=params) == ref


@pytest.mark.parametrize("feature", [False, True])
def test_perfect_head_accepts_everything(feature, monkeypatch):
    """A head at exit layer L-1 initialised from layer L-1 with the full vocabulary *is*
    the target's last layer: every draft is accepted (a feature-input head starts with
    the feature switched off, so it is the same). As a tree (the full 3-ary tree, so it
    holds the whole top-1 path), the top-1 path is kept in full every round."""
    import mlxspec.drafters.head as head_mod

    monkeypatch.setattr(head_mod, "_GROW_MIN_SCORE", 0.0)
    model = tiny_model(V, layers=3, hidden=32, seed=4, scale=2.0)
    for width in (1, 3):
        d = HeadDrafter(model, new_head(model, 2, feature_input=feature), core_ids=list(range(24)),
                        vocab_mode="full", tail_capacity=16, num_neighbours=2, min_confidence=0.0,
                        tree_width=width, tree_frontier=64, tree_nodes=1000)
        eng = Engine(model, CharTokenizer(V), d, num_draft=4, draft_name="h", adaptive=False)
        s = list(eng.stream([3, 4, 5], SamplingParams(), max_tokens=41))[-1].stats
        assert s.rounds == 8 and s.accepted == 4 * s.rounds
        assert s.drafted == (s.accepted if width == 1 else 8 * (3 + 9 + 27 + 81))


def test_drafting_stops_when_the_chain_is_unlikely_to_survive(monkeypatch):
    """The stop rule multiplies the head's confidences: at 0.6 per token and a floor of
    0.3 the chain stops after 3 tokens (0.6^2 = 0.36, 0.6^3 = 0.216)."""
    model = tiny_model(V, layers=3, hidden=32, seed=4)
    d = make_drafter(model, min_conf=0.3, mode="static", width=1, lookup=0)
    target = d.make_runner(model)
    target.prefill([3, 4, 5])
    d.reset([3, 4, 5], target)
    n = d.vocab.size
    row = np.full(n, np.log(0.4 / (n - 1)), dtype=np.float32)
    row[1] = np.log(0.6)
    monkeypatch.setattr(d, "sub_logits", lambda hn: mx.array(row))
    assert len(d.propose(8, SamplingParams(), np.random.default_rng(0)).tokens) == 3


def test_feature_input_sees_the_verified_states():
    """After rounds of draft/verify/trim, the head's next step (its cache plus the
    feature it is given) equals the head run in one pass over the whole sequence with
    the target's true final states as features: nothing predicted is left behind."""
    from mlxspec.head.objective import shifted_features

    model = tiny_model(V, layers=4, hidden=32, seed=8, scale=2.0)
    d = make_drafter(model, k=2, feature=True, width=1, lookup=0)
    runner = d.make_runner(model)
    rng = np.random.default_rng(1)
    prompt = [int(t) for t in rng.integers(0, V, 9)]
    seq = prompt + [int(mx.argmax(runner.prefill(prompt, chunk_size=4)).item())]
    d.reset(seq, runner)
    for _ in range(6):
        draft = d.propose(int(rng.integers(1, 4)), SamplingParams(), rng).tokens
        runner.forward([seq[-1]] + draft)
        n = int(rng.integers(0, len(draft) + 1))
        runner.trim(len(draft) - n)
        nxt = int(rng.integers(0, V))
        d.accept(draft[:n], nxt)
        seq += draft[:n] + [nxt]
    got = runner.draft_step(seq[-1], runner.last_feature())
    lm = LayeredModel(model)
    x = mx.array([seq], dtype=mx.uint32)
    h_k = lm.run_layers(lm.embed(x), 0, 2, None, mask="causal")
    hn = lm.norm(lm.run_layers(h_k, 2, 4, None, mask="causal"))
    ref = d.head(h_k, shifted_features(hn), "causal", None)[0, -1]
    assert float(mx.abs(runner.last_feature() - hn[0, -2]).max()) <= LOGIT_TOL
    assert float(mx.abs(got - ref).max()) <= LOGIT_TOL


def test_draft_probs_zero_outside_subset():
    model = tiny_model(V, layers=4, hidden=32, seed=6)
    d = make_drafter(model, core=10, tail=4, lookup=0)
    runner = d.make_runner(model)
    runner.prefill([1, 2, 3])
    d.reset([1, 2, 3, 40], runner)
    draft = d.propose(3, SamplingParams(temp=1.0), np.random.default_rng(0))
    probs = np.stack(draft.q)
    assert probs.shape == (len(draft.tokens), V)
    inside = np.zeros(V, bool)
    inside[d.vocab.ids()] = True
    assert np.all(probs[:, ~inside] == 0)
    assert np.allclose(probs.sum(1), 1)
    assert all(inside[t] for t in draft.tokens)


def test_sampling_is_exact():
    """Chi-square: the first two tokens sampled with the pruned-vocab head drafter follow
    the target's exact distribution p(x1) p(x2 | x1)."""
    v = 12
    model = tiny_model(v, layers=3, hidden=32, seed=7, scale=1.5)
    params = SamplingParams(temp=1.0)
    prompt = [1, 2, 3]
    ref = TargetRunner(model)
    p1 = probs_from_logits(np.array(ref.prefill(prompt)), prompt, params)
    exact = {}
    for a in range(v):
        r = TargetRunner(model)
        p2 = probs_from_logits(np.array(r.prefill(prompt + [a])), prompt + [a], params)
        for b in range(v):
            exact[(a, b)] = p1[a] * p2[b]
    d = HeadDrafter(model, new_head(model, 1), core_ids=[0, 1, 2, 3, 4], vocab_mode="dynamic",
                    tail_capacity=3, num_neighbours=1, min_confidence=0.0)
    eng = Engine(model, CharTokenizer(v), d, num_draft=2, draft_name="h", adaptive=False)
    n = 2500
    counts = Counter()
    rounds = 0
    for seed in range(n):
        out = list(eng.stream(prompt, params, max_tokens=3, seed=seed))
        counts[(out[0].token, out[1].token)] += 1
        rounds += out[-1].stats.rounds
    assert rounds > 0
    # pool rare cells so every expected count is >= 5
    keys = sorted(exact, key=lambda k: -exact[k])
    obs, exp, rest_o, rest_e = [], [], 0, 0.0
    for k in keys:
        if exact[k] * n >= 5:
            obs.append(counts[k])
            exp.append(exact[k] * n)
        else:
            rest_o += counts[k]
            rest_e += exact[k] * n
    obs.append(rest_o)
    exp.append(rest_e)
    obs, exp = np.array(obs, float), np.array(exp, float)
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    dof = len(obs) - 1
    # 99.9% quantile of chi-square ~ dof + 3.1*sqrt(2 dof) + 7 (generous upper bound)
    assert chi2 < dof + 3.1 * np.sqrt(2 * dof) + 7, (chi2, dof)


# -- head files ------------------------------------------------------------------------
def _save(model, tmp_path, name="t", feature=False):
    from mlxspec.head.io import save_head

    head = new_head(model, 2, feature_input=feature)
    path = tmp_path / "heads" / f"{name}.safetensors"
    save_head(path, head, np.arange(30, dtype=np.int32), LayeredModel(model).fingerprint(),
              {"vocab": 20, "vocab_mode": "static", "exit_layer": 2})
    return head, path


@pytest.mark.parametrize("feature", [False, True])
def test_head_file_round_trip(tmp_path, feature):
    model = tiny_model(V, layers=4, hidden=32, seed=8)
    head, path = _save(model, tmp_path, feature=feature)
    assert path.with_suffix(".json").is_file()
    assert find_heads(tmp_path) == [path]
    d = load_head_drafter(model, CharTokenizer(V, eos=63), tmp_path)
    assert d.vocab.mode == "static" and d.vocab.size == 21  # 20 core + EOS
    from mlx.utils import tree_flatten

    a, b = dict(tree_flatten(head.parameters())), dict(tree_flatten(d.head.parameters()))
    assert a.keys() == b.keys() and all(mx.array_equal(a[k], b[k]) for k in a)
    assert d.head.config.feature_input == feature and ("fuse.weight" in a) == feature
    assert not list((tmp_path / "heads").glob(".*tmp*"))  # no temp files left


def test_corrupt_head_file_gives_clear_error(tmp_path):
    model = tiny_model(V, layers=4, hidden=32, seed=8)
    _, path = _save(model, tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(HeadLoadError, match="corrupt"):
        load_head_drafter(model, None, tmp_path)
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(HeadLoadError, match="corrupt"):
        load_head_drafter(model, None, tmp_path, head_path=path)


def test_mismatched_head_file_gives_clear_error(tmp_path):
    model = tiny_model(V, layers=4, hidden=32, seed=8)
    _save(model, tmp_path)
    other = tiny_model(V, layers=4, hidden=32, seed=9)  # same shapes, other weights
    with pytest.raises(HeadLoadError, match="another model"):
        load_head_drafter(other, None, tmp_path)
    bigger = tiny_model(V, layers=5, hidden=32, seed=8)
    with pytest.raises(HeadLoadError, match="another model"):
        load_head_drafter(bigger, None, tmp_path)


def test_bad_head_falls_back_to_another_drafter(tmp_path):
    from mlxspec.loading import LoadedModel, _head_drafter

    model = tiny_model(V, layers=4, hidden=32, seed=8)
    _, path = _save(model, tmp_path)
    target = LoadedModel("tiny", tmp_path, model, CharTokenizer(V), {"vocab_size": V})
    assert isinstance(_head_drafter(target, required=False), HeadDrafter)
    path.write_bytes(b"garbage")
    assert _head_drafter(target, required=False) is None  # engine uses another drafter
    with pytest.raises(HeadLoadError):
        _head_drafter(target, required=True)


# -- training --------------------------------------------------------------------------
def _corpus(tmp_path):
    rng = np.random.default_rng(0)
    words = ["def ", "return ", "self", "(x)", ", ", "the ", "licence ", "\n", "    ", "if "]
    f = tmp_path / "corpus.txt"
    f.write_text("".join(words[i] for i in rng.integers(0, len(words), 3000)))
    return f


@pytest.mark.parametrize("feature", [False, True])
def test_train_resume_is_identical_and_output_loads(tmp_path, feature):
    from mlxspec.training.train import TrainSettings, train

    model = tiny_model(V, layers=4, hidden=32, seed=10)
    tok = CharTokenizer(V, eos=63)
    corpus = _corpus(tmp_path)

    def settings():
        return TrainSettings(exit_layer=2, vocab=20, steps=6, batch=2, seq_len=16, lr=1e-3,
                             warmup=2, corpus=[str(corpus)], eval_windows=4, corpus_tokens=4000,
                             feature_input=feature)

    losses = []
    res_a = train(model, tok, tmp_path / "a", settings(), progress=False,
                  on_step=lambda s, l: losses.append(l))
    assert res_a is not None and res_a.path.is_file() and res_a.steps == 6
    assert not (tmp_path / "a" / "heads" / ".ckpt-default").exists()
    # interrupted after 3 steps, then resumed
    assert train(model, tok, tmp_path / "b", settings(), progress=False, stop_after=3,
                 ckpt_every=100) is None
    assert (tmp_path / "b" / "heads" / ".ckpt-default" / "state.json").is_file()
    res_b = train(model, tok, tmp_path / "b", settings(), progress=False)
    assert res_b.steps == 6
    da = load_head_drafter(model, tok, tmp_path / "a")
    db = load_head_drafter(model, tok, tmp_path / "b")
    from mlx.utils import tree_flatten

    a, b = dict(tree_flatten(da.head.parameters())), dict(tree_flatten(db.head.parameters()))
    assert all(mx.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert losses[-1] < losses[0]
    s = res_a.settings
    assert s["exit_layer"] == 2 and s["vocab"] == 20 and s["steps"] == 6
    assert "top1_agreement_core_vocab" in s["acceptance"]
    assert ("top1_agreement_chained" in s["acceptance"]) == feature
    assert da.head.config.feature_input == feature and s["feature_input"] == feature
    assert 63 in set(da.vocab.ids())  # EOS always in the core


def test_new_learning_rate_reuses_the_teacher_features(tmp_path, monkeypatch):
    """Only the teacher-side settings (corpus, exit layer, windows) force the expensive
    teacher pass again; a new learning rate trains a new head on the stored features."""
    from mlxspec.training import teacher as teacher_mod
    from mlxspec.training.train import TrainSettings, train

    model = tiny_model(V, layers=4, hidden=32, seed=11)
    tok = CharTokenizer(V, eos=63)
    corpus = _corpus(tmp_path)

    def settings(lr, exit_layer=2):
        return TrainSettings(exit_layer=exit_layer, vocab=20, steps=4, batch=2, seq_len=16, lr=lr,
                             warmup=1, corpus=[str(corpus)], eval_windows=4, corpus_tokens=2000)

    assert train(model, tok, tmp_path, settings(3e-3), progress=False, stop_after=1) is None
    calls = []
    real_call = teacher_mod.Teacher.__call__
    monkeypatch.setattr(teacher_mod.Teacher, "__call__", lambda self, x: calls.append(x.shape) or real_call(self, x))
    res = train(model, tok, tmp_path, settings(1e-3), progress=False)
    assert res is not None and res.steps == 4 and res.settings["lr"] == 1e-3
    eval_batches = 1  # 4 eval windows in one batch of 8: the only teacher pass left
    assert len(calls) == eval_batches
    # another exit layer changes the features: the teacher runs over the corpus again
    calls.clear()
    assert train(model, tok, tmp_path, settings(1e-3, exit_layer=1), progress=False, stop_after=1) is None
    assert len(calls) > eval_batches


def test_init_from_fine_tunes_an_existing_head(tmp_path):
    from mlx.utils import tree_flatten

    from mlxspec.errors import InvalidParameterError
    from mlxspec.training.train import TrainSettings, train

    model = tiny_model(V, layers=4, hidden=32, seed=12)
    tok = CharTokenizer(V, eos=63)
    corpus = _corpus(tmp_path)

    def settings(**kw):
        base = dict(exit_layer=2, vocab=20, steps=4, batch=2, seq_len=16, lr=1e-3, warmup=1,
                    corpus=[str(corpus)], eval_windows=4, corpus_tokens=2000, feature_input=True)
        base.update(kw)
        return TrainSettings(**base)

    first = train(model, tok, tmp_path / "a", settings(), progress=False)
    # a near-zero learning rate: the fine-tuned head is the head it started from
    tuned = train(model, tok, tmp_path / "b", settings(init_from=str(first.path), lr=1e-12, steps=1),
                  progress=False)
    a = dict(tree_flatten(load_head_drafter(model, tok, tmp_path / "a").head.parameters()))
    b = dict(tree_flatten(load_head_drafter(model, tok, tmp_path / "b").head.parameters()))
    assert all(mx.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert tuned is not None and tuned.settings["steps"] == 1
    with pytest.raises(InvalidParameterError, match="exit layer"):
        train(model, tok, tmp_path / "c", settings(init_from=str(first.path), exit_layer=1), progress=False)


def test_self_distillation_prompts_are_not_the_benchmark_prompts():
    from mlxspec.bench.prompts import SETS
    from mlxspec.training.prompt_sets import default_prompts, extra_prompts, more_prompts

    bench = {m["content"] for chats in SETS.values() for chat in chats.values() for m in chat
             if m["role"] == "user"}
    base, more = default_prompts(), more_prompts()
    ours = base + more + extra_prompts()
    assert len(ours) == len(set(ours)) >= 1200  # the sets do not overlap either
    assert not bench & set(ours)
    assert not any(w in p.lower() for p in ours
                   for w in ("fibonacci", "lighthouse", "seasons", "indemnif", "csv line"))
    # --limit on the second set takes a mix of code, prose and explanations
    first = more[:100]
    assert 20 < sum("Python" in p for p in first) < 80
