"""GGUF -> MLX folder (mlxspec.hub.gguf) on a tiny llama written with gguf.GGUFWriter:
every tensor equals the gguf package's reference dequantisation (Q8_0, Q4_0, Q4_1, F16, F32),
in Hugging Face layout (shape order, rotary rows), and the converted folder loads and
computes the same logits as a model built from those reference weights."""
from __future__ import annotations

import json

import gguf
import mlx.core as mx
import numpy as np
import pytest
from gguf.quants import dequantize, quantize
from mlx.utils import tree_flatten

from mlxspec.hub import gguf as conv
from tiny import tiny_model

Q = gguf.GGMLQuantizationType
HEADS, KV_HEADS, HIDDEN, LAYERS, VOCAB = 4, 2, 32, 2, 64
# which quant each tensor kind gets: all five types, and both rotary tensors quantized
KIND_QUANT = {"attn_q": Q.Q8_0, "attn_k": Q.Q4_0, "attn_v": Q.F16, "attn_output": Q.Q4_1,
              "ffn_gate": Q.Q4_0, "ffn_up": Q.Q4_1, "ffn_down": Q.Q8_0, "token_embd": Q.Q8_0}


def _gguf_name(hf: str) -> str:
    top = {v: k for k, v in conv._TOP_NAMES.items()}
    layer = {v: k for k, v in conv._LAYER_NAMES.items()}
    parts = hf.split(".")
    if parts[:2] == ["model", "layers"]:
        return f"blk.{parts[2]}.{layer['.'.join(parts[3:-1])]}.{parts[-1]}"
    return f"{top['.'.join(parts[:-1])]}.{parts[-1]}"


def _kind(name: str) -> str:
    return name.split(".")[2] if name.startswith("blk.") else name.split(".")[0]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """(gguf path, original HF weights, reference HF weights from gguf's dequantize)."""
    root = tmp_path_factory.mktemp("gguf")
    model = tiny_model(VOCAB, layers=LAYERS, hidden=HIDDEN, seed=3)
    hf = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    w = gguf.GGUFWriter(str(root / "tiny.gguf"), "llama")
    w.add_block_count(LAYERS)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(2 * HIDDEN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_context_length(256)
    w.add_vocab_size(VOCAB)
    w.add_tokenizer_model("gpt2")
    tokens = [chr(c) for c in range(ord("a"), ord("a") + VOCAB - 2)] + ["ab", "<|endoftext|>"]
    w.add_token_list(tokens)
    w.add_token_types([1] * (VOCAB - 1) + [3])
    w.add_token_merges(["a b"])
    w.add_eos_token_id(VOCAB - 1)
    ref = {}
    for name, value in hf.items():
        g = _gguf_name(name)
        stored = value
        if g.endswith((".attn_q.weight", ".attn_k.weight")):  # llama.cpp's row order
            stored = conv.permute_rotary(value, HEADS if ".attn_q." in g else KV_HEADS)
        qtype = KIND_QUANT.get(_kind(g), Q.F32)
        data = {Q.F32: lambda a: a.astype(np.float32), Q.F16: lambda a: a.astype(np.float16)}.get(
            qtype, lambda a: quantize(a.astype(np.float32), qtype))(stored)
        w.add_tensor(g, data, raw_dtype=qtype)
        back = dequantize(data, qtype).reshape(value.shape).astype(np.float32)  # the reference
        if g.endswith((".attn_q.weight", ".attn_k.weight")):
            back = conv.unpermute_rotary(back, HEADS if ".attn_q." in g else KV_HEADS)
        ref[name] = back
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return root / "tiny.gguf", hf, ref


@pytest.fixture(scope="module")
def converted(written, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf-out")
    conv.convert(written[0], out)
    return out


def test_every_quant_type_is_in_the_file(written):
    reader = gguf.GGUFReader(str(written[0]))
    assert {t.tensor_type for t in reader.tensors} == {Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.F16, Q.F32}


def test_weights_equal_the_reference_dequantisation(written, converted):
    from safetensors.numpy import load_file

    _, hf, ref = written
    index = json.loads((converted / "model.safetensors.index.json").read_text())
    got = {}
    for shard in sorted(set(index["weight_map"].values())):
        got.update(load_file(str(converted / shard)))
    assert set(got) == set(hf)  # tied embeddings: no lm_head in the file, none made up
    for name, value in got.items():
        assert value.dtype == np.float32 and value.shape == hf[name].shape, name
        np.testing.assert_array_equal(value, ref[name], err_msg=name)
        # and close to the weights before quantization (catches a wrong layout that the
        # reference shares, e.g. a transposed block order)
        err = np.abs(value - hf[name]).max() / (np.abs(hf[name]).max() + 1e-12)
        assert err < 0.2, (name, err)


def test_a_missing_unpermute_is_caught(written):
    """Control: skipping llama's rotary unpermute breaks the Q/K comparison above."""
    _, _, ref = written
    reader = gguf.GGUFReader(str(written[0]))
    config = conv.read_config(reader)
    config_no_unpermute = dict(config, model_type="qwen2")  # qwen2 GGUFs are not permuted
    got = dict(conv.iter_weights(reader, config_no_unpermute))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not np.array_equal(got[name], ref[name])
    assert np.array_equal(dict(conv.iter_weights(reader, config))[name], ref[name])


def test_a_wrong_dequantiser_is_caught(written, monkeypatch):
    """Control: a conversion whose Q4_1 decoding is off by 1% differs from the reference
    on the Q4_1 tensors (and only there)."""
    import gguf.quants

    real = gguf.quants.dequantize
    monkeypatch.setattr(gguf.quants, "dequantize",
                        lambda data, qtype: real(data, qtype) * (1.01 if qtype == Q.Q4_1 else 1.0))
    reader = gguf.GGUFReader(str(written[0]))
    got = dict(conv.iter_weights(reader, conv.read_config(reader)))
    _, _, ref = written
    assert not np.array_equal(got["model.layers.0.mlp.up_proj.weight"], ref["model.layers.0.mlp.up_proj.weight"])
    assert np.array_equal(got["model.layers.0.mlp.gate_proj.weight"], ref["model.layers.0.mlp.gate_proj.weight"])


def _f16(two_bytes: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(two_bytes).view(np.float16).astype(np.float32).reshape(-1)


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0, Q.Q4_1])
def test_reference_matches_the_block_formats(qtype):
    """gguf's dequantize against the formats written out by hand (ggml's block layouts):
    Q8_0 = f16 d + 32 int8 (x = d q); Q4_0 = f16 d + 16 bytes of nibbles (x = d (q - 8));
    Q4_1 = f16 d, f16 m + nibbles (x = d q + m); low nibbles are the block's first half."""
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    raw = quantize(x, qtype)
    head = {Q.Q8_0: 2, Q.Q4_0: 2, Q.Q4_1: 4}[qtype]
    blocks = raw.reshape(-1, head + (32 if qtype == Q.Q8_0 else 16))
    d = _f16(blocks[:, :2])[:, None]
    if qtype == Q.Q8_0:
        mine = d * blocks[:, 2:].view(np.int8).astype(np.float32)
    else:
        q = blocks[:, head:]
        nib = np.concatenate([q & 0x0F, q >> 4], axis=1).astype(np.float32)
        mine = d * (nib - 8) if qtype == Q.Q4_0 else d * nib + _f16(blocks[:, 2:4])[:, None]
    np.testing.assert_array_equal(dequantize(raw, qtype).reshape(-1), mine.reshape(-1))
    assert np.abs(mine.reshape(x.shape) - x).max() < (0.05 if qtype == Q.Q8_0 else 0.5)


def test_config_and_tokenizer(written, converted):
    cfg = json.loads((converted / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
            cfg["intermediate_size"], cfg["vocab_size"]) == (HIDDEN, LAYERS, HEADS, KV_HEADS, 2 * HIDDEN, VOCAB)
    assert cfg["tie_word_embeddings"] is True and cfg["eos_token_id"] == VOCAB - 1
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(converted))
    assert len(tok) == VOCAB and tok.convert_tokens_to_ids("<|endoftext|>") == VOCAB - 1
    assert tok.encode("ab", add_special_tokens=False) == [VOCAB - 2]  # the merge applies


def test_converted_folder_computes_the_reference_model(written, converted):
    from mlxspec.loading import load_model

    _, _, ref = written
    loaded = load_model(str(converted))
    expect = tiny_model(VOCAB, layers=LAYERS, hidden=HIDDEN, seed=3)
    expect.load_weights([(k, mx.array(v)) for k, v in ref.items()])
    x = mx.array([[1, 5, 9, 2, 33, 60]])
    np.testing.assert_allclose(np.array(loaded.model(x)), np.array(expect(x)), rtol=1e-5, atol=1e-5)
