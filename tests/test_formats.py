"""Weight formats: LayeredModel, the LM head over a vocabulary subset, its dense form,
and the draft head's construction work on float32 / bf16 / f16 and mlx-lm quantized
(4- and 8-bit, QuantizedEmbedding, quantized untied lm_head, tied quantized embedding)
targets."""
import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlxspec.head.io import check_fingerprint
from mlxspec.head.model import new_head
from mlxspec.head.vocab import NeighbourIndex
from mlxspec.runtime.layered import LayeredModel, dequantized
from tiny import FORMATS, tiny_model

V = 64
HALF = ("bfloat16", "float16", "q4-bf16")
# (arch, tied): tied float / quantized embedding as the LM head, untied (Linear or
# QuantizedLinear), gemma2's soft-capped logits.
HEADS = [("llama", True), ("llama", False), ("qwen3", True), ("qwen3", False), ("gemma2", True)]


def _hn(lm, fmt, n=3, seed=0):
    """Final normalised hidden states the way drafting gets them: from the model, and
    from a float32 head (float32 rows against a half/quantized LM head)."""
    x = mx.array([[int(t) for t in np.random.default_rng(seed).integers(0, V, n)]])
    hn = lm.norm(lm.run_layers(lm.embed(x), 0, lm.num_layers))[0]
    return [hn, hn.astype(mx.float32), hn[-1].astype(mx.float32)]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("arch,tied", HEADS)
def test_subset_logits_equal_the_full_head_rows(arch, tied, fmt):
    model = tiny_model(V, layers=2, seed=4, arch=arch, fmt=fmt, tied=tied)
    lm = LayeredModel(model)
    quant = fmt.startswith("q")
    assert lm.quantized == quant and lm.tied == tied
    layer = model.model.embed_tokens if tied else model.lm_head
    assert isinstance(layer, (nn.QuantizedEmbedding, nn.QuantizedLinear)) == quant
    ids = [5, 0, 63, 17, 5, 40]  # unordered, repeated, both ends
    rows = lm.lm_head_rows(ids)
    assert len(rows) == 6 and 0 < rows.nbytes
    for h in _hn(lm, fmt):
        full = lm.logits(h)
        sub = rows(h)
        assert sub.shape == h.shape[:-1] + (6,) and sub.dtype == full.dtype
        # the same row of the same kernel: equal up to float32 reassociation
        tol = 1e-2 if fmt in HALF and h.dtype != mx.float32 else 1e-5
        assert float(mx.abs(sub - full[..., mx.array(ids)]).astype(mx.float32).max()) <= tol
        assert np.array_equal(np.argmax(np.array(sub.astype(mx.float32)), -1),
                              np.argmax(np.array(full[..., mx.array(ids)].astype(mx.float32)), -1))
    assert rows.logits is not None and float(mx.abs(rows.logits(h) - rows(h)).max()) == 0.0


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("arch,tied", HEADS)
def test_dense_head_and_embeddings(arch, tied, fmt):
    model = tiny_model(V, layers=2, seed=5, arch=arch, fmt=fmt, tied=tied)
    lm = LayeredModel(model)
    assert (lm.vocab_size, lm.hidden_size) == (V, 32)
    W = lm.lm_head_dense()
    assert W.shape == (V, 32) and W.dtype == mx.float32
    assert lm.lm_head_dense() is W  # computed once
    layer = model.model.embed_tokens if tied else model.lm_head
    if fmt.startswith("q"):
        ref = mx.dequantize(layer.weight, layer.scales, layer.biases, group_size=32, bits=layer.bits)
        assert float(mx.abs(W - ref.astype(mx.float32)).max()) == 0.0
        assert lm.lm_head_weight is W
    else:
        assert lm.lm_head_weight is layer.weight  # float models: no copy
        assert float(mx.abs(W - layer.weight.astype(mx.float32)).max()) == 0.0
    # the dense matrix gives the head's logits (pre soft-cap)
    h = _hn(lm, fmt)[1]
    x = h @ W.T
    if lm.softcap:
        x = mx.tanh(x / lm.softcap) * lm.softcap
    tol = 5e-2 if fmt in HALF else 1e-4
    assert float(mx.abs(x - lm.logits(h).astype(mx.float32)).max()) <= tol
    # dense rows of a subset, and the row view, are the same numbers
    ids = [3, 9, 60]
    assert float(mx.abs(lm.lm_head_rows(ids).dense() - W[mx.array(ids)]).max()) == 0.0
    view = lm.lm_head_view()
    assert view.shape == (V, 32)
    assert float(mx.abs(view[mx.array(ids)] - W[mx.array(ids)]).max()) == 0.0
    assert float(mx.abs(view[9] - W[9]).max()) == 0.0
    # embed() works on QuantizedEmbedding: the dequantized row (gemma: times sqrt(d))
    e = lm.embed([7, 2])[0].astype(mx.float32)
    emb = dequantized(model.model.embed_tokens)[mx.array([7, 2])].astype(mx.float32)
    if arch.startswith("gemma"):
        emb = emb * 32**0.5
    assert float(mx.abs(e - emb).max()) <= (1e-2 if fmt in HALF else 1e-6)


def test_fingerprint_reads_dequantized_rows():
    dense = tiny_model(V, seed=6, arch="qwen2")
    fp = LayeredModel(dense).fingerprint()
    w = dense.model.embed_tokens.weight  # the formula of head files written before
    old = mx.concatenate([w[:4, :8].reshape(-1), w[-4:, :8].reshape(-1)])
    assert fp["embed_probe"] == [round(float(x), 5) for x in old.tolist()]
    q8 = LayeredModel(tiny_model(V, seed=6, arch="qwen2", fmt="q8")).fingerprint()
    assert q8["hidden_size"] == 32 and q8["vocab_size"] == V
    # 8-bit rows are the float rows to ~1e-3: a head trained on one fits the other
    assert np.allclose(q8["embed_probe"], fp["embed_probe"], atol=2e-3, rtol=2e-2)
    other = LayeredModel(tiny_model(V, seed=7, arch="qwen2", fmt="q8")).fingerprint()
    assert not np.allclose(other["embed_probe"], fp["embed_probe"], atol=2e-3, rtol=2e-2)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma", "gemma2"])
def test_new_head_on_any_format_is_float32_and_starts_as_layer_k(arch, fmt):
    model = tiny_model(V, layers=4, seed=8, arch=arch, fmt=fmt)
    lm = LayeredModel(model)
    head = new_head(model, 2, feature_input=True)
    from mlx.utils import tree_flatten

    assert {v.dtype for _, v in tree_flatten(head.parameters())} == {mx.float32}
    assert type(head.norm) is type(model.model.norm)  # gemma's norm scales by 1 + w
    # untrained, the head's block is the target's layer 2 (dequantized, in float32)
    x = lm.run_layers(lm.embed([[1, 2, 3, 4]]), 0, 2)
    mask = "causal"
    ref = lm.layers[2](x, mx.array(np.tril(np.ones((4, 4), bool))) if arch == "gemma2" else mask)
    got = head.block(x.astype(mx.float32), mx.array(np.tril(np.ones((4, 4), bool))) if arch == "gemma2" else mask)
    tol = 5e-2 if fmt in HALF else 1e-4
    assert float(mx.abs(got - ref.astype(mx.float32)).max()) <= tol * max(1.0, float(mx.abs(ref).max()))
    y = head(x, None, mask, None)  # h_k in the target's dtype, a float32 result
    assert y.dtype == mx.float32 and bool(mx.all(mx.isfinite(y)))


@pytest.mark.parametrize("fmt", ["float32", "q4", "q4-bf16"])
def test_neighbour_index_over_a_quantized_head(fmt):
    model = tiny_model(V, seed=9, arch="qwen3", fmt=fmt, tied=True)
    lm = LayeredModel(model)
    a = NeighbourIndex(lm.lm_head_view(), num_neighbours=3, bits=4)
    b = NeighbourIndex(lm.lm_head_dense(), num_neighbours=3, bits=4)
    assert [a.neighbours(t) for t in range(V)] == [b.neighbours(t) for t in range(V)]
    assert any(len(a.neighbours(t)) == 3 for t in range(V))


def test_head_file_fingerprint_check_accepts_the_same_quantized_model():
    from types import SimpleNamespace
    from pathlib import Path

    fp = LayeredModel(tiny_model(V, seed=3, arch="llama", fmt="q4")).fingerprint()
    again = LayeredModel(tiny_model(V, seed=3, arch="llama", fmt="q4")).fingerprint()
    check_fingerprint(SimpleNamespace(path=Path("h.safetensors"), fingerprint=fp), again)
