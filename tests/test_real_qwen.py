"""The real Qwen2.5-Coder pair (make test-all): the 0.5B drafting for the 1.5B, and the
1.5B's own head drafter, give exactly the plain greedy output."""
import pytest

from conftest import REPO

TARGET = REPO / "models" / "qwen2.5-coder-1.5b-instruct"
DRAFT = REPO / "models" / "qwen2.5-coder-0.5b-instruct"
pytestmark = [
    pytest.mark.qwen,
    pytest.mark.skipif(not (TARGET / "config.json").exists() or not (DRAFT / "config.json").exists(),
                       reason="Qwen pair not pulled (make pull-qwen)"),
]

PROMPTS = [
    "Write a Python function that checks whether a number is prime.",
    "Explain what a mutex is in two sentences.",
]
N = 32


@pytest.fixture(scope="module")
def pair():
    from mlxspec.loading import check_tokenizers, load_model

    target, draft = load_model(str(TARGET)), load_model(str(DRAFT))
    check_tokenizers(target, draft)  # vocab sizes differ by padding only
    return target, draft


@pytest.fixture(scope="module")
def reference(pair):
    from mlxspec.engine import Engine
    from mlxspec.sampling import SamplingParams

    target, _ = pair
    plain = Engine(target.model, target.tokenizer)
    return {p: [r.token for r in plain.stream(plain.encode_prompt(p), SamplingParams(), max_tokens=N)]
            for p in PROMPTS}


def test_draft_model_greedy_equals_plain(pair, reference):
    from mlxspec.drafters.draft_model import ModelDrafter
    from mlxspec.engine import Engine
    from mlxspec.sampling import SamplingParams

    target, draft = pair
    spec = Engine(target.model, target.tokenizer, ModelDrafter(draft.model, target.vocab_size),
                  draft_name="draft", adaptive=False)
    for p in PROMPTS:
        out = list(spec.stream(spec.encode_prompt(p), SamplingParams(), max_tokens=N))
        assert [r.token for r in out] == reference[p], p
        assert out[-1].stats.accepted > 0


def test_head_greedy_equals_plain(pair, reference, tmp_path):
    """The 1.5B's trained head if it has one, else the head its first run makes (an
    adapting head started from the target's own layer, in a temp copy of the folder)."""
    from mlxspec.drafters.adaptive import AdaptiveHeadDrafter
    from mlxspec.drafters.head import find_heads, load_head_drafter
    from mlxspec.engine import Engine
    from mlxspec.sampling import SamplingParams

    target, _ = pair
    if find_heads(TARGET):
        drafter = load_head_drafter(target.model, target.tokenizer, TARGET)
    else:
        from mlxspec.adapt import Adapter

        drafter = AdaptiveHeadDrafter(target.model, Adapter.open(target.model, tmp_path, target.tokenizer))
    spec = Engine(target.model, target.tokenizer, drafter, draft_name="head", adaptive=False)
    for p in PROMPTS:
        out = list(spec.stream(spec.encode_prompt(p), SamplingParams(), max_tokens=N))
        assert [r.token for r in out] == reference[p], p
        assert out[-1].stats.rounds > 0
