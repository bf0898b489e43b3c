"""An independent greedy reference (mlx-lm's own generate_step), and stops (end token,
stop string, the context's end) landing inside accepted drafts, in chains and trees;
the stats describe exactly what was emitted."""
import mlx.core as mx
import numpy as np
import pytest

from mlxspec.drafters.compose import Composite
from mlxspec.drafters.draft_model import ModelDrafter
from mlxspec.drafters.lookup import LookupDrafter
from mlxspec.engine import Engine
from mlxspec.sampling import SamplingParams
from tiny import CharTokenizer, tiny_model

V = 64


def mlx_lm_greedy(model, prompt, n):
    from mlx_lm.generate import generate_step

    out = []
    for tok, _ in generate_step(mx.array(prompt, dtype=mx.uint32), model, max_tokens=n):
        out.append(int(tok))
    return out


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
@pytest.mark.parametrize("seed", range(3))
def test_plain_decoding_equals_mlx_lm_generate_step(arch, seed):
    model = tiny_model(V, layers=2, hidden=32, seed=seed, arch=arch, scale=3.0)
    prompt = [int(t) for t in np.random.default_rng(seed).integers(0, V, 6 + seed)]
    ref = mlx_lm_greedy(model, prompt, 30)
    got = [r.token for r in Engine(model, CharTokenizer(V)).stream(prompt, SamplingParams(), max_tokens=30)]
    assert got == ref
    spec = Engine(model, CharTokenizer(V), Composite(ModelDrafter(model, V), [LookupDrafter()]), adaptive=False)
    assert [r.token for r in spec.stream(prompt, SamplingParams(), max_tokens=30)] == ref


@pytest.fixture(scope="module")
def model():
    return tiny_model(V, layers=2, hidden=32, seed=3, scale=3.0)


def self_drafting(model, tree):
    """Drafts that are always right (the target drafting for itself), as chains or, with
    copied branches beside them, trees."""
    d = ModelDrafter(model, V, min_confidence=0.0)
    return Composite(d, [LookupDrafter()]) if tree else d


def emitted_stats_ok(out):
    s = out[-1].stats
    assert s.accepted == sum(r.from_draft for r in out)
    assert s.accepted + s.rounds <= len(out)  # the mean accepted length is of emitted tokens
    assert len(out) - (s.accepted + s.rounds + s.plain_steps + 1) in (0, -1)  # one cut round at most


@pytest.mark.parametrize("tree", [False, True])
def test_end_token_inside_an_accepted_draft(model, tree):
    prompt = [1, 2, 3, 1, 2, 3]
    ref = [r.token for r in Engine(model, CharTokenizer(V)).stream(prompt, SamplingParams(), max_tokens=30)]
    eos = ref[4]
    cut = ref.index(eos)
    eng = Engine(model, CharTokenizer(V, eos=eos), self_drafting(model, tree), num_draft=8, adaptive=False)
    out = list(eng.stream(prompt, SamplingParams(), max_tokens=30))
    assert [r.token for r in out] == ref[: cut + 1] and out[-1].finish_reason == "stop"
    assert out[-1].from_draft  # the end token came out of a draft run ...
    assert out[-1].stats.drafted > len(out) - 1  # ... that drafted past it
    emitted_stats_ok(out)


@pytest.mark.parametrize("tree", [False, True])
def test_stop_string_inside_an_accepted_draft(model, tree):
    prompt = [1, 2, 3, 1, 2, 3]
    plain = list(Engine(model, CharTokenizer(V)).stream(prompt, SamplingParams(), max_tokens=30))
    text = "".join(r.text for r in plain)
    stop = text[4:6]
    eng = Engine(model, CharTokenizer(V), self_drafting(model, tree), num_draft=8, adaptive=False)
    out = list(eng.stream(prompt, SamplingParams(), max_tokens=30, stop=[stop]))
    assert "".join(r.text for r in out) == text[: text.index(stop)] and out[-1].finish_reason == "stop"
    assert out[-1].from_draft and out[-1].stats.drafted > len(out) - 1
    emitted_stats_ok(out)


@pytest.mark.parametrize("tree", [False, True])
@pytest.mark.parametrize("limit", [13, 16, 21])
def test_the_context_limit_inside_a_draft_run(model, tree, limit):
    prompt = [1, 2, 3, 1, 2, 3]
    ref = [r.token for r in Engine(model, CharTokenizer(V)).stream(prompt, SamplingParams(), max_tokens=30)]
    eng = Engine(model, CharTokenizer(V), self_drafting(model, tree), num_draft=8, adaptive=False,
                 max_context=limit)
    out = list(eng.stream(prompt, SamplingParams(), max_tokens=100))
    assert [r.token for r in out] == ref[: limit - len(prompt)] and out[-1].finish_reason == "length"
    assert eng.runner.length <= limit


@pytest.mark.real
def test_plain_decoding_equals_mlx_lm_on_smollm2():
    from mlxspec.loading import load_model

    smol = load_model("smollm2-135m-instruct")
    for text in ("Write a haiku about rain.", "List three prime numbers.", "def add(a, b):"):
        prompt = list(smol.tokenizer.encode(text))
        ref = mlx_lm_greedy(smol.model, prompt, 24)
        eng = Engine(smol.model, smol.tokenizer, max_context=smol.max_context)
        # an end token stops the engine's reply; mlx-lm's generate_step does not stop
        got = [r.token for r in eng.stream(prompt, SamplingParams(), max_tokens=24)]
        assert got == ref[: len(got)] and len(got) >= 8
