"""Model internals per architecture: the supported list is enforced, layered execution
equals mlx-lm's forward, and tree attention (mlx-lm's own blocks at explicit positions)
equals running each root-to-node path through the plain model, for every arch in
runtime.layered.ARCHS and every weight format of tests/tiny.py."""
import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models import gemma3_text, phi3
from mlx_lm.models.cache import make_prompt_cache

from mlxspec.errors import MlxspecError, first_line
from mlxspec.head.model import new_head
from mlxspec.runtime.layered import SUPPORTED, LayeredModel, UnsupportedArchitectureError, block_class_and_args
from mlxspec.runtime.tree_attention import ancestor_matrix, tree_block, tree_mask
from tiny import ARCHS, FORMATS, tiny_model

V = 64
# Stated tolerance, relative to the largest |logit| (at least 1): float32 (and quantized
# with float32 scales) differ by reassociation only, 1e-4 (measured: <= 8e-5 with
# OpenBLAS, 0 with MLX's reference BLAS). Half precision may round at different points
# on other backends: about two bf16 / f16 ulps (measured 0 on the CPU).
TOL = {"float32": 1e-4, "q4": 1e-4, "q8": 1e-4, "bfloat16": 2e-2, "q4-bf16": 2e-2, "float16": 2e-3}


def close(got, ref, fmt):
    scale = max(1.0, float(mx.abs(ref).max()))
    return float(mx.abs(got - ref).max()) <= TOL[fmt] * scale


def test_supported_list_covers_the_tiny_archs():
    assert set(SUPPORTED) == set(ARCHS)
    assert {"llama", "qwen2", "qwen3"} <= set(SUPPORTED)


def _phi3():
    args = phi3.ModelArgs(model_type="phi3", hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                          num_attention_heads=4, rms_norm_eps=1e-5, vocab_size=V, num_key_value_heads=2)
    return phi3.Model(args)


def _gemma3():
    args = gemma3_text.ModelArgs(model_type="gemma3_text", hidden_size=32, num_hidden_layers=2,
                                 intermediate_size=64, num_attention_heads=4, head_dim=8,
                                 rms_norm_eps=1e-5, vocab_size=V, num_key_value_heads=2)
    return gemma3_text.Model(args)


@pytest.mark.parametrize("make,name", [(_phi3, "phi3"), (_gemma3, "gemma3_text")])
def test_unsupported_architecture_is_refused_in_one_line(make, name):
    model = make()
    for build in (LayeredModel, block_class_and_args, new_head):
        with pytest.raises(UnsupportedArchitectureError) as e:
            build(model)
        msg = first_line(e.value)
        assert isinstance(e.value, MlxspecError) and "\n" not in str(e.value)
        assert repr(name) in msg and all(a in msg for a in SUPPORTED)


def test_a_model_type_claimed_by_another_module_is_refused():
    # a phi3 module that says "llama" in its config must not pass as llama
    model = _phi3()
    model.model_type = "llama"
    model.args.model_type = "llama"
    with pytest.raises(UnsupportedArchitectureError, match="'llama'"):
        LayeredModel(model)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("arch", ARCHS)
def test_layers_split_anywhere_equal_the_model(arch, fmt):
    model = tiny_model(V, layers=4, seed=3, arch=arch, fmt=fmt)
    lm = LayeredModel(model)
    x = mx.array([[1, 5, 9, 2, 7, 30]], dtype=mx.uint32)
    ref = model(x).astype(mx.float32)
    assert close(lm(x).astype(mx.float32), ref, fmt)
    for k in (1, 2, 3):
        c = make_prompt_cache(model)
        h = lm.run_layers(lm.embed(x[:, :4]), 0, k, c)  # prefill over the cache, then one more chunk
        h = lm.run_layers(h, k, 4, c)
        h2 = lm.run_layers(lm.run_layers(lm.embed(x[:, 4:]), 0, k, c), k, 4, c)
        got = lm.logits(lm.norm(mx.concatenate([h, h2], axis=1))).astype(mx.float32)
        assert close(got, ref, fmt), k
        assert [ci.offset for ci in c] == [6] * 4
    # training's uncached "causal" mask
    got = lm.logits(lm.norm(lm.run_layers(lm.embed(x), 0, 4, None, mask="causal")))
    assert close(got.astype(mx.float32), ref, fmt)


def random_tree(rng, n):
    """parents[i] < i (or -1), some nodes with several children."""
    return [int(rng.integers(-1, i)) if i else -1 for i in range(n)]


def _path(i, parents):
    out = []
    while i >= 0:
        out.append(i)
        i = parents[i]
    return out[::-1]


def check_tree(model, fmt, seed):
    """A random tree over a cached prompt, through every layer by tree_block: each
    node's logits equal the plain model's on the node's root-to-node path."""
    lm = LayeredModel(model)
    assert lm.supports_tree
    rng = np.random.default_rng(seed)
    prompt = [int(t) for t in rng.integers(0, V, 9)]
    for n in (1, 7):
        parents = random_tree(rng, n)
        tokens = [int(t) for t in rng.integers(0, V, n)]
        cache = make_prompt_cache(model)
        model(mx.array(prompt)[None], cache=cache)
        anc = ancestor_matrix(parents)
        pos = mx.array(len(prompt) + anc.sum(axis=1) - 1, dtype=mx.int32)
        mask = tree_mask(len(prompt), anc)
        h = lm.embed(tokens)
        for i, layer in enumerate(lm.layers):
            h = tree_block(layer, h, mask, cache[i], pos)
        got = lm.logits(lm.norm(h))[0].astype(mx.float32)
        assert [c.offset for c in cache] == [len(prompt) + n] * lm.num_layers
        for i in range(n):
            seq = prompt + [tokens[j] for j in _path(i, parents)]
            ref = model(mx.array(seq)[None])[0, -1].astype(mx.float32)
            assert close(got[i], ref, fmt), (i, float(mx.abs(got[i] - ref).max()))
            if fmt == "float32":
                assert int(mx.argmax(got[i])) == int(mx.argmax(ref))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("arch", ARCHS)
def test_tree_attention_equals_each_path_alone(arch, fmt):
    model = tiny_model(V, layers=3, seed=1, arch=arch, fmt=fmt, scale=2.0)
    check_tree(model, fmt, sum(map(ord, arch + fmt)))


@pytest.mark.parametrize("arch", ARCHS)
def test_head_tree_call_equals_its_path_calls(arch):
    """The draft head is one block of the target's architecture: in a tree it must give
    what it gives on each path alone (q/k norms, gemma norms and scaling included)."""
    from mlx_lm.models.cache import KVCache

    model = tiny_model(V, layers=4, seed=2, arch=arch)
    head = new_head(model, 2)
    lm = LayeredModel(model)
    rng = np.random.default_rng(5)
    prefix = lm.embed([int(t) for t in rng.integers(0, V, 6)])
    parents = [-1, 0, 0, 1, -1]
    nodes = lm.embed([int(t) for t in rng.integers(0, V, 5)])
    anc = ancestor_matrix(parents)
    c = KVCache()
    head(prefix, None, "causal", c)
    got = head(nodes, None, tree_mask(6, anc), c, positions=mx.array(6 + anc.sum(axis=1) - 1))
    for i in range(5):
        path = _path(i, parents)
        ref = head(mx.concatenate([prefix, nodes[:, path]], axis=1), None, "causal", None)[0, -1]
        assert float(mx.abs(got[0, i] - ref).max()) <= 1e-4


def test_tree_block_leaves_the_attention_module_as_it_was():
    model = tiny_model(V, layers=2, seed=0, arch="qwen3")
    layer = LayeredModel(model).layers[0]
    rope = layer.self_attn.rope
    keys = sorted(layer.self_attn.keys())
    c = make_prompt_cache(model)[0]
    tree_block(layer, mx.zeros((1, 2, 32)), tree_mask(0, ancestor_matrix([-1, 0])), c, mx.array([0, 1]))
    assert layer.self_attn.rope is rope and "rope" not in layer.self_attn.__dict__
    with pytest.raises(ValueError):  # a bad mask fails inside the block: still restored
        tree_block(layer, mx.zeros((1, 2, 32)), mx.ones((1, 1, 3, 9), dtype=mx.bool_), c, mx.array([2, 3]))
    assert layer.self_attn.rope is rope and sorted(layer.self_attn.keys()) == keys
    # and the plain path still uses consecutive positions
    x = mx.array([[1, 2, 3]])
    assert float(mx.abs(LayeredModel(model)(x) - model(x)).max()) == 0.0


def test_sliding_window_layers_do_not_claim_tree_support():
    from mlx_lm.models import llama

    args = llama.ModelArgs(model_type="llama", hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                           num_attention_heads=4, rms_norm_eps=1e-5, vocab_size=V, num_key_value_heads=2,
                           layer_types=["sliding_attention", "full_attention"], sliding_window=4)
    model = llama.Model(args)
    lm = LayeredModel(model)
    assert not lm.supports_tree
    x = mx.array([list(range(1, 10))])
    c = make_prompt_cache(model)
    got = lm.run_layers(lm.embed(x), 0, 1, c)
    got = lm.logits(lm.norm(lm.run_layers(got, 1, 2, c)))
    assert float(mx.abs(got - model(x)).max()) <= 1e-5
    # the uncached "causal" request still gets the window on the sliding layer
    got = lm.logits(lm.norm(lm.run_layers(lm.embed(x), 0, 2, None, mask="causal")))
    assert float(mx.abs(got - model(x)).max()) <= 1e-5
    # a mistral config's sliding_window without sliding layers is plain full attention
    assert LayeredModel(tiny_model(V, arch="mistral")).supports_tree


def test_rope_variants_tree_support():
    # dynamic-NTK RoPE's base depends on the chunk length: no per-token positions
    from mlx_lm.models import llama

    args = llama.ModelArgs(model_type="llama", hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                           num_attention_heads=4, rms_norm_eps=1e-5, vocab_size=V, num_key_value_heads=2,
                           rope_scaling={"type": "dynamic", "factor": 2.0}, max_position_embeddings=64)
    assert not LayeredModel(llama.Model(args)).supports_tree
    for scaling in ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 32},
                    {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
                    {"type": "linear", "factor": 2.0}):
        args.rope_scaling = scaling
        mx.random.seed(0)
        model = llama.Model(args)
        check_tree(model, "float32", 0)  # the per-row offsets work for these RoPEs too
