"""Integration on the real smollm2-135m (pulled by `make test`): lossless on real text."""
import pytest

from conftest import REPO

MODEL_DIR = REPO / "models" / "smollm2-135m-instruct"
pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(not (MODEL_DIR / "config.json").exists(), reason="smollm2-135m-instruct not pulled"),
]

PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "List three colours of the rainbow.",
]


@pytest.fixture(scope="module")
def smol():
    from mlxspec.loading import load_model

    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def noisy_draft(smol):
    """A perturbed copy of the model: agrees often but not always, like a real drafter."""
    from tiny import perturbed_copy

    return perturbed_copy(smol.model, noise=0.004, seed=7)


def _tokens(engine, prompt, n=40, **kw):
    from mlxspec.sampling import SamplingParams

    ids = engine.encode_prompt(prompt)
    return list(engine.stream(ids, SamplingParams(**kw), max_tokens=n, seed=3))


def test_greedy_speculative_equals_plain_on_real_model(smol, noisy_draft):
    from mlxspec.drafters.draft_model import ModelDrafter
    from mlxspec.engine import Engine

    plain = Engine(smol.model, smol.tokenizer, max_context=smol.max_context)
    accepted = rejected = 0
    for prompt in PROMPTS:
        ref = [r.token for r in _tokens(plain, prompt)]
        for k in (2, 5):
            spec = Engine(smol.model, smol.tokenizer, ModelDrafter(noisy_draft, smol.vocab_size),
                          num_draft=k, draft_name="noisy", adaptive=False, max_context=smol.max_context)
            out = _tokens(spec, prompt)
            assert [r.token for r in out] == ref, (prompt, k)
            accepted += out[-1].stats.accepted
            rejected += out[-1].stats.drafted - out[-1].stats.accepted
    assert accepted > 0 and rejected > 0  # both paths of verification ran


def test_answer_is_sensible(smol):
    from mlxspec.engine import Engine

    engine = Engine(smol.model, smol.tokenizer, max_context=smol.max_context)
    text = "".join(r.text for r in _tokens(engine, PROMPTS[0], n=24))
    assert "Paris" in text


def test_sampling_runs_on_real_model(smol, noisy_draft):
    from mlxspec.drafters.draft_model import ModelDrafter
    from mlxspec.engine import Engine

    spec = Engine(smol.model, smol.tokenizer, ModelDrafter(noisy_draft, smol.vocab_size),
                  num_draft=4, draft_name="noisy", adaptive=False, max_context=smol.max_context)
    out = _tokens(spec, PROMPTS[1], n=32, temp=0.8, top_p=0.95)
    assert len(out) > 0 and out[-1].stats.drafted > 0


EDIT_PROMPT = ("Repeat this code exactly, with `total` renamed to `acc`:\n"
               "def add_all(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total\n")


# q4 costs a minute here (quantized matmuls cost n tokens on this CPU): make test-all
@pytest.mark.parametrize("fmt", ["float32", pytest.param("q4", marks=pytest.mark.slow)])
def test_prompt_lookup_equals_plain_on_real_model(smol, fmt):
    """`--draft lookup` on the real model, as pulled and as a 4-bit copy quantized here
    with mlx-lm's own quantizer: greedy output equals plain decoding, and copied
    tokens were accepted."""
    import copy

    from mlxspec.drafters.compose import Composite
    from mlxspec.drafters.lookup import LookupDrafter
    from mlxspec.engine import Engine
    from tiny import quantize

    model = smol.model
    if fmt == "q4":
        model = quantize(copy.deepcopy(smol.model), 4, group_size=64)
    accepted = 0
    prompts = PROMPTS + [EDIT_PROMPT] if fmt == "float32" else [PROMPTS[1], EDIT_PROMPT]  # 4-bit is slow here
    for prompt in prompts:
        plain = Engine(model, smol.tokenizer, max_context=smol.max_context)
        spec = Engine(model, smol.tokenizer, Composite(None, [LookupDrafter()], label="lookup"),
                      max_context=smol.max_context, adaptive=False)
        ref = [r.token for r in _tokens(plain, prompt)]
        out = _tokens(spec, prompt)
        assert [r.token for r in out] == ref
        accepted += out[-1].stats.accepted
    assert accepted > 0
