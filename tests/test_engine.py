"""Speculative decoding on tiny random models: lossless greedy, rewind, cache reuse."""
import numpy as np
import pytest

from mlxspec.drafters.draft_model import ModelDrafter
from mlxspec.engine import Engine
from mlxspec.sampling import SamplingParams
from mlxspec.runtime.target import TargetRunner
from tiny import CharTokenizer, perturbed_copy, tiny_model

V = 64


def tokens_of(engine, prompt, n=40, **kw):
    params = kw.pop("params", SamplingParams())
    return [r.token for r in engine.stream(prompt, params, max_tokens=n, **kw)]


@pytest.fixture(scope="module")
def target():
    return tiny_model(V, layers=2, hidden=64, scale=3.0, seed=0)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_greedy_speculative_equals_plain(seed, k):
    arch = "qwen2" if seed % 2 else "llama"
    target = tiny_model(V, layers=2, hidden=48, scale=3.0, seed=seed, arch=arch)
    draft = perturbed_copy(target, noise=0.02 * (1 + seed % 3), seed=100 + seed)
    tok = CharTokenizer(V)
    prompt = list(np.random.default_rng(seed).integers(0, V, size=3 + seed))
    ref = tokens_of(Engine(target, tok), prompt)
    for adaptive in (False, True):
        engine = Engine(target, tok, ModelDrafter(draft, V), num_draft=k, draft_name="d", adaptive=adaptive)
        assert tokens_of(engine, prompt) == ref


@pytest.mark.parametrize("pipeline", [False, True])
@pytest.mark.parametrize("penalty", [None, 1.3])
def test_confidence_stops_stay_lossless_built_ahead_or_not(target, pipeline, penalty):
    params = SamplingParams(repetition_penalty=penalty)
    tok = CharTokenizer(V)
    ref = tokens_of(Engine(target, tok), [1, 2, 3], params=params)
    d = ModelDrafter(perturbed_copy(target, 0.3, seed=3), V, min_confidence=0.5, pipeline=pipeline)
    engine = Engine(target, tok, d, num_draft=4, draft_name="d", adaptive=False)
    assert tokens_of(engine, [1, 2, 3], params=params) == ref
    for _ in range(2):  # the draft's cache follows the sequence across replies
        assert tokens_of(engine, [1, 2, 3], params=params) == ref


def test_a_step_is_built_ahead_of_a_stop_only_where_asked(target):
    """A draft stopped by its confidence computes one forward per token it drafted
    (after the first) on a CPU; built ahead of the read (a GPU's way) it computes the
    step after the stop too. Counted over a reply whose drafts stop early."""
    def forwards(pipeline):
        d = ModelDrafter(perturbed_copy(target, 0.3, seed=3), V, min_confidence=0.5, pipeline=pipeline)
        calls, drafted = [0], []
        inner_next, inner_propose = d._next_row, d.propose
        d._next_row = lambda tok: (calls.__setitem__(0, calls[0] + 1), inner_next(tok))[1]

        def propose(k, *a, **kw):
            tree = inner_propose(k, *a, **kw)
            drafted.append((k, len(tree)))
            return tree
        d.propose = propose
        tokens_of(Engine(target, CharTokenizer(V), d, num_draft=4, draft_name="d", adaptive=False), [1, 2, 3])
        stopped = sum(1 for k, n in drafted if n < k)
        return calls[0], sum(n - 1 for _, n in drafted), stopped

    calls, needed, stopped = forwards(False)
    assert stopped > 0 and calls == needed
    calls, needed, stopped = forwards(True)
    assert stopped > 0 and calls == needed + stopped


def test_speculation_actually_ran(target):
    """Guards the equality test above: drafts were proposed and some were accepted."""
    draft = perturbed_copy(target, 0.02)
    engine = Engine(target, CharTokenizer(V), ModelDrafter(draft, V), num_draft=4, draft_name="d", adaptive=False)
    last = list(engine.stream([1, 2, 3], SamplingParams(), max_tokens=40))[-1]
    assert last.stats.rounds > 0 and 0 < last.stats.accepted < last.stats.drafted


def test_self_drafting_accepts_everything(target):
    engine = Engine(target, CharTokenizer(V), ModelDrafter(target, V, min_confidence=0.0),
                    num_draft=4, draft_name="self", adaptive=False)
    out = list(engine.stream([5, 6, 7], SamplingParams(), max_tokens=41))
    s = out[-1].stats
    assert s.drafted > 0 and s.accepted == s.drafted
    assert s.mean_accepted_length == pytest.approx(5.0)
    assert sum(r.from_draft for r in out) == s.accepted


def test_repetition_penalty_stays_lossless(target):
    params = SamplingParams(repetition_penalty=1.3)
    tok = CharTokenizer(V)
    ref = tokens_of(Engine(target, tok), [1, 2, 3], params=params)
    assert ref != tokens_of(Engine(target, tok), [1, 2, 3])  # the penalty matters here
    spec = Engine(target, tok, ModelDrafter(perturbed_copy(target, 0.02), V), num_draft=3, draft_name="d")
    assert tokens_of(spec, [1, 2, 3], params=params) == ref


def test_draft_with_padded_vocab_is_lossless(target):
    """Family members can pad their embeddings differently (Qwen does)."""
    big = tiny_model(V + 16, layers=1, hidden=32, seed=3)
    tok = CharTokenizer(V)
    ref = tokens_of(Engine(target, tok), [9, 8, 7])
    spec = Engine(target, tok, ModelDrafter(big, V), num_draft=4, draft_name="d", adaptive=False)
    out = tokens_of(spec, [9, 8, 7])
    assert out == ref and max(out) < V


def test_cache_rewind_matches_fresh_forward(target):
    runner = TargetRunner(target)
    runner.prefill([1, 2, 3, 4])
    runner.forward([5, 6, 7])
    runner.trim(3)
    assert runner.length == 4 and all(c.offset == 4 for c in runner.cache)
    rewound = np.array(runner.forward([9, 10]))
    fresh = TargetRunner(target)
    fresh.prefill([1, 2, 3, 4])
    expected = np.array(fresh.forward([9, 10]))
    np.testing.assert_allclose(rewound, expected, atol=1e-4)


def test_chunked_prefill_matches_one_shot(target):
    prompt = list(range(1, 40))
    a = TargetRunner(target).prefill(prompt, chunk_size=7)
    b = TargetRunner(target).prefill(prompt, chunk_size=512)
    # Other matmul shapes sum in another order: float32 noise, relative to logits ~10.
    np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-4)


def test_cache_is_reused_across_calls(target):
    """A second call extending the first call's sequence reuses the cache and still
    gives exactly what a fresh engine gives."""
    tok = CharTokenizer(V)
    draft = perturbed_copy(target, 0.02)
    engine = Engine(target, tok, ModelDrafter(draft, V), num_draft=3, draft_name="d")
    first = tokens_of(engine, [1, 2, 3], n=12)
    follow = [1, 2, 3] + first + [4, 5]
    again = list(engine.stream(follow, SamplingParams(), max_tokens=12))
    assert again[0].prompt_tps > 0
    fresh = tokens_of(Engine(target, tok), follow, n=12)
    assert [r.token for r in again] == fresh
    # a diverging prompt (edited history) is also handled
    edited = [1, 2, 9] + first
    assert tokens_of(engine, edited, n=12) == tokens_of(Engine(target, tok), edited, n=12)


def test_closing_the_stream_leaves_engine_usable(target):
    tok = CharTokenizer(V)
    engine = Engine(target, tok, ModelDrafter(perturbed_copy(target, 0.02), V), num_draft=4, draft_name="d")
    gen = engine.stream([1, 2, 3], SamplingParams(), max_tokens=40)
    for _ in range(5):
        next(gen)
    gen.close()
    assert tokens_of(engine, [4, 5, 6]) == tokens_of(Engine(target, tok), [4, 5, 6])


def test_eos_and_max_tokens(target):
    tok = CharTokenizer(V)
    ref = tokens_of(Engine(target, tok), [1, 2, 3], n=30)
    eos = ref[10]
    first = ref.index(eos)
    out = list(Engine(target, CharTokenizer(V, eos=eos)).stream([1, 2, 3], SamplingParams(), max_tokens=30))
    assert [r.token for r in out] == ref[: first + 1]
    assert out[-1].finish_reason == "stop"
    out = list(Engine(target, tok).stream([1, 2, 3], SamplingParams(), max_tokens=7))
    assert len(out) == 7 and out[-1].finish_reason == "length"


def test_stop_string_truncates_text(target):
    tok = CharTokenizer(V)
    text = "".join(r.text for r in Engine(target, tok).stream([1, 2, 3], SamplingParams(), max_tokens=30))
    stop = text[8:10]
    cut = text.index(stop)
    out = list(Engine(target, tok).stream([1, 2, 3], SamplingParams(), max_tokens=30, stop=[stop]))
    assert "".join(r.text for r in out) == text[:cut]
    assert out[-1].finish_reason == "stop"


def test_context_limit_is_enforced(target):
    from mlxspec.errors import InvalidParameterError

    engine = Engine(target, CharTokenizer(V), max_context=16)
    with pytest.raises(InvalidParameterError, match="context"):
        list(engine.stream(list(range(20)), SamplingParams(), max_tokens=4))
    out = list(engine.stream(list(range(10)), SamplingParams(), max_tokens=100))
    assert len(out) == 6 and out[-1].finish_reason == "length"


@pytest.mark.parametrize("bad", [dict(max_tokens=0), dict(max_tokens=-3), dict(num_draft=-1)])
def test_bad_parameters_raise(target, bad):
    from mlxspec.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError):
        list(Engine(target, CharTokenizer(V)).stream([1, 2], SamplingParams(), **bad))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_prefill_logits_equal_full_forward(arch):
    """Prefill skips the LM head on all but the last position; logits must not change."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    model = tiny_model(V, layers=2, hidden=32, seed=2, arch=arch)
    prompt = list(range(3, 30))
    full = model(mx.array(prompt)[None], cache=make_prompt_cache(model))[0, -1]
    got = TargetRunner(model).prefill(prompt, chunk_size=10)
    np.testing.assert_allclose(np.array(got), np.array(full), atol=1e-4)


@pytest.mark.parametrize("model,draft", [("", "none"), ("   ", "none"), (None, ""), (None, "  ")])
def test_blank_model_or_draft_names_are_refused(model, draft):
    """A blank name is a mistake, not a request for the default model or no drafter."""
    from mlxspec.errors import ModelNotFoundError
    from mlxspec.loading import build_drafter, load_model

    with pytest.raises(ModelNotFoundError, match="empty"):
        if model is not None:
            load_model(model)
        else:
            build_drafter(None, draft)


def test_non_finite_logits_at_the_first_step_name_the_model(target):
    import mlx.core as mx
    from mlxspec.errors import ModelLoadError

    broken = tiny_model(V, layers=2, hidden=32, seed=9)
    broken.update({"model": {"norm": {"weight": mx.full(broken.model.norm.weight.shape, float("nan"))}}})
    with pytest.raises(ModelLoadError, match="'tiny'.*non-finite"):
        list(Engine(broken, CharTokenizer(V), model_name="tiny").stream([1, 2], SamplingParams(), max_tokens=4))


def test_head_on_an_unsupported_architecture_falls_back_to_lookup(monkeypatch):
    """`--draft head` on an architecture without layer access: one warning line and a
    drafter that needs no model internals (prompt lookup), still lossless."""
    from mlxspec import loading

    model = tiny_model(V, layers=2, hidden=32, seed=2)
    model.model_type = "phi3"  # an architecture early-layer drafting does not support
    monkeypatch.setattr(model.args, "model_type", "phi3", raising=False)
    target = loading.LoadedModel("tiny", None, model, CharTokenizer(V), {"vocab_size": V})
    warnings = []
    monkeypatch.setattr(loading.log, "warning", lambda msg, *a: warnings.append(msg % a))
    drafter = loading.build_drafter(target, "head")
    assert drafter.name == "lookup" and len(warnings) == 1 and "'phi3' is not supported" in warnings[0]
    prompt = [1, 2, 3, 4] * 3
    ref = tokens_of(Engine(model, CharTokenizer(V)), prompt, n=20)
    assert tokens_of(Engine(model, CharTokenizer(V), drafter, adaptive=False), prompt, n=20) == ref
