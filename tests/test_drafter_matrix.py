"""Every drafter x architecture x weight format: greedy speculative output equals plain
greedy output, over seeds and draft lengths (tiny random models). Strict in float32 and
q4 (float32 scales); in bfloat16 a first divergence may only be a near-tie within the
dtype's bound (mlxspec/eval/lossless.py; this CPU rounds both paths alike, so the
bfloat16 outputs are equal here too)."""
import mlx.core as mx
import numpy as np
import pytest

from mlxspec.drafters.compose import Composite
from mlxspec.drafters.draft_model import ModelDrafter
from mlxspec.drafters.head import HeadDrafter
from mlxspec.drafters.lookup import LookupDrafter
from mlxspec.engine import Engine
from mlxspec.eval.lossless import assert_greedy_lossless
from mlxspec.head.model import new_head
from mlxspec.sampling import SamplingParams
from tiny import CharTokenizer, perturbed_copy, quantize, tiny_model

V = 64
DRAFTERS = ("draft-model", "lookup", "head", "head+lookup")


def in_format(model, fmt):
    if fmt == "bfloat16":
        model.set_dtype(mx.bfloat16)
    elif fmt == "q4":
        quantize(model, 4)
    mx.eval(model.parameters())
    return model


def make_drafter(kind, target, float_target):
    if kind == "draft-model":
        return ModelDrafter(perturbed_copy(float_target, 0.02, seed=7), V)
    if kind == "lookup":
        return LookupDrafter()
    head = HeadDrafter(target, new_head(target, 2), core_ids=list(range(24)), vocab_mode="dynamic",
                       tail_capacity=8, num_neighbours=2, min_confidence=0.0)
    return Composite(head, [LookupDrafter()]) if kind == "head+lookup" else head


@pytest.mark.parametrize("fmt", ["float32", "bfloat16", "q4"])
@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
@pytest.mark.parametrize("kind", DRAFTERS)
def test_greedy_speculative_equals_plain(kind, arch, fmt):
    tok = CharTokenizer(V)
    ran = 0
    for seed in range(2):
        float_target = tiny_model(V, layers=4, hidden=32, seed=seed, arch=arch, scale=3.0)
        target = tiny_model(V, layers=4, hidden=32, seed=seed, arch=arch, scale=3.0, fmt=fmt)
        base = [int(t) for t in np.random.default_rng(seed).integers(0, V, 5)]
        first = [r.token for r in Engine(target, tok).stream(base, SamplingParams(), max_tokens=12)]
        prompt = base + first + base  # the reply tends to repeat itself: lookup fires
        ref = [r.token for r in Engine(target, tok).stream(prompt, SamplingParams(), max_tokens=24)]
        for k in (1, 4):
            eng = Engine(target, tok, make_drafter(kind, target, float_target), num_draft=k, adaptive=False)
            out = list(eng.stream(prompt, SamplingParams(), max_tokens=24))
            got = [r.token for r in out]
            if fmt == "bfloat16":
                assert_greedy_lossless(target, prompt, ref, got, fmt)
            else:
                assert got == ref, (seed, k)
            ran += out[-1].stats.rounds
    assert ran > 0  # speculation ran
