"""The head drafter on the real smollm2-135m: lossless greedy, sampling runs, and a real
head made the way a user gets one (the first run of --draft head adapts a new head and
saves it) loads from its file and stays lossless."""
import numpy as np
import pytest

from conftest import REPO

MODEL_DIR = REPO / "models" / "smollm2-135m-instruct"
pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(not (MODEL_DIR / "config.json").exists(), reason="smollm2-135m-instruct not pulled"),
]

PROMPTS = [
    "Write a Python function that checks whether a string is a palindrome.",
    "Explain in two sentences what a software licence is.",
]


@pytest.fixture(scope="module")
def target():
    from mlxspec.loading import load_model

    return load_model(str(MODEL_DIR))


@pytest.fixture(scope="module")
def drafter(target):
    from mlxspec.drafters.head import HeadDrafter, find_heads, load_head_drafter
    from mlxspec.head.model import new_head

    if find_heads(MODEL_DIR):
        return load_head_drafter(target.model, target.tokenizer, MODEL_DIR)
    return HeadDrafter(target.model, new_head(target.model), core_ids=range(6144),
                       eos_ids=target.tokenizer.eos_token_ids)


def test_greedy_head_equals_plain_real(target, drafter):
    from mlxspec.engine import Engine
    from mlxspec.sampling import SamplingParams

    plain = Engine(target.model, target.tokenizer)
    spec = Engine(target.model, target.tokenizer, drafter, draft_name="head", adaptive=False)
    for p in PROMPTS:
        ids = plain.encode_prompt(p)
        ref = [r.token for r in plain.stream(ids, SamplingParams(), max_tokens=24)]
        out = list(spec.stream(ids, SamplingParams(), max_tokens=24))
        assert [r.token for r in out] == ref
        assert out[-1].stats.rounds > 0


def test_sampling_runs_real(target, drafter):
    from mlxspec.engine import Engine
    from mlxspec.sampling import SamplingParams

    spec = Engine(target.model, target.tokenizer, drafter, draft_name="head", adaptive=False)
    ids = spec.encode_prompt(PROMPTS[0])
    out = list(spec.stream(ids, SamplingParams(temp=0.7, top_p=0.9), max_tokens=16, seed=1))
    assert len(out) >= 1 and out[-1].stats.drafted > 0


def test_the_head_from_the_first_run_is_saved_loads_and_stays_lossless(tmp_path):
    """Through the load path a user takes: `--draft head` on a model with no head starts
    one and adapts it after each reply; the saved file is a real head that
    load_head_drafter reads (it does not fall back to an untrained one)."""
    import mlxspec
    from mlxspec.drafters.head import find_heads, load_head_drafter
    from mlxspec.engine import Engine
    from mlxspec.sampling import SamplingParams

    folder = tmp_path / "smol"
    folder.mkdir()
    for f in MODEL_DIR.iterdir():  # the model's own files; heads land in the temp copy
        if f.is_file() and not f.name.startswith("."):
            (folder / f.name).symlink_to(f)
    engine = mlxspec.load(str(folder), draft="head", adapt=True)
    plain = Engine(engine.model, engine.tokenizer)
    for p in PROMPTS:
        ids = plain.encode_prompt(p)
        ref = [r.token for r in plain.stream(ids, SamplingParams(), max_tokens=16)]
        assert [r.token for r in engine.stream(ids, SamplingParams(), max_tokens=16)] == ref
    heads = find_heads(folder)
    assert heads and heads[0].name == "adapted.safetensors"
    loaded = load_head_drafter(engine.model, engine.tokenizer, folder)
    assert loaded.name == "head:adapted"
    spec = Engine(engine.model, engine.tokenizer, loaded, adaptive=False)
    ids = spec.encode_prompt(PROMPTS[0])
    out = list(spec.stream(ids, SamplingParams(), max_tokens=16))
    assert [r.token for r in out] == [r.token for r in plain.stream(ids, SamplingParams(), max_tokens=16)]
    assert out[-1].stats.rounds > 0
