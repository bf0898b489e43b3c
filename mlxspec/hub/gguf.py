"""GGUF file -> MLX/Hugging Face folder (config.json, float32 safetensors, tokenizer).

Weights are dequantized with the `gguf` package's own dequantizer (every quant type, no
torch). The tokenizer is rebuilt by transformers' GGUF tokenizer converter from metadata we
read with the `gguf` package (transformers' own GGUF reader needs torch).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from mlxspec.errors import ModelLoadError

SHARD_BYTES = 2 * 1024**3  # several shards keep peak memory near one shard, not the model

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
SUPPORTED_ARCHS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def _value(reader, key, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def hf_name(gguf_name: str) -> str:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`."""
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        layer, kind, suffix = parts[1], parts[2], ".".join(parts[3:])
        if kind not in _LAYER_NAMES:
            raise ModelLoadError(f"unknown GGUF tensor {gguf_name}")
        return f"model.layers.{layer}.{_LAYER_NAMES[kind]}.{suffix}"
    if parts[0] in _TOP_NAMES:
        return f"{_TOP_NAMES[parts[0]]}.{'.'.join(parts[1:])}"
    raise ModelLoadError(f"unknown GGUF tensor {gguf_name}")


def unpermute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's llama-arch Q/K row order (pairs interleaved per head) back to
    the halves layout that Hugging Face / mlx-lm rotary embeddings expect."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's permutation (the inverse of `unpermute_rotary`), for tests."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_config(reader) -> dict:
    arch = _value(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise ModelLoadError(f"GGUF architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHS)})")

    def a(key, default=None):
        return _value(reader, f"{arch}.{key}", default)

    names = {t.name for t in reader.tensors}
    vocab = a("vocab_size") or len(reader.fields["tokenizer.ggml.tokens"].data)
    config = {
        "architectures": [SUPPORTED_ARCHS[arch]],
        "model_type": arch,
        "hidden_size": int(a("embedding_length")),
        "intermediate_size": int(a("feed_forward_length")),
        "num_hidden_layers": int(a("block_count")),
        "num_attention_heads": int(a("attention.head_count")),
        "num_key_value_heads": int(a("attention.head_count_kv", a("attention.head_count"))),
        "rms_norm_eps": float(a("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(a("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(a("context_length", 4096)),
        "vocab_size": int(vocab),
        "tie_word_embeddings": "output.weight" not in names,
        "torch_dtype": "float32",
    }
    for key in ("bos_token_id", "eos_token_id"):
        v = _value(reader, f"tokenizer.ggml.{key}")
        if v is not None:
            config[key] = int(v)
    return config


def iter_weights(reader, config: dict, progress: Optional[Callable[[int, int], None]] = None):
    """Yield (hf_name, float32 array) one tensor at a time."""
    from gguf.quants import dequantize

    unpermute = config["model_type"] == "llama"
    total = len(reader.tensors)
    for i, t in enumerate(reader.tensors):
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        w = w.reshape(shape)
        if unpermute and t.name.startswith("blk.") and t.name.endswith((".attn_q.weight", ".attn_k.weight")):
            heads = config["num_attention_heads"] if ".attn_q." in t.name else config["num_key_value_heads"]
            w = unpermute_rotary(w, heads)
        yield hf_name(t.name), np.ascontiguousarray(w)
        if progress:
            progress(i + 1, total)


def write_weights(reader, config: dict, out: Path, progress=None) -> None:
    from safetensors.numpy import save_file

    shards, current, size = [], {}, 0
    for name, w in iter_weights(reader, config, progress):
        current[name] = w
        size += w.nbytes
        if size >= SHARD_BYTES:
            shards.append(current)
            save_file(current, str(out / f"model-{len(shards):05d}.safetensors"))
            current, size = {}, 0
            shards[-1] = list(shards[-1])  # keep names only, free the arrays
    if current:
        shards.append(current)
        save_file(current, str(out / f"model-{len(shards):05d}.safetensors"))
        shards[-1] = list(shards[-1])
    index = {"metadata": {"format": "mlx"}, "weight_map": {
        name: f"model-{i + 1:05d}.safetensors" for i, names in enumerate(shards) for name in names}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))


def write_tokenizer(reader, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    meta = {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}
    grouped = {group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta}
               for group, renames in GGUF_TOKENIZER_MAPPING.items()}
    tok_dict, tok_config = grouped["tokenizer"], grouped["tokenizer_config"]
    tokens = tok_dict["tokens"]
    for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        idx = meta.get(f"tokenizer.ggml.{key}")
        tok_config[name] = tokens[int(idx)] if idx is not None else None
    arch = _value(reader, "general.architecture")
    backend, extra = convert_gguf_tokenizer(arch, tok_dict)
    tok_config.update(extra)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **tok_config)
    tokenizer.save_pretrained(str(out))


def convert(gguf_path: Path, out: Path, progress=None) -> dict:
    """Write the MLX folder for `gguf_path` into `out` (which must exist)."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(gguf_path))
    except Exception as exc:
        raise ModelLoadError(f"{gguf_path.name} is not a readable GGUF file: {exc}") from None
    config = read_config(reader)
    write_tokenizer(reader, out)
    write_weights(reader, config, out, progress)
    (out / "config.json").write_text(json.dumps(config, indent=1))
    eos = config.get("eos_token_id")
    gen = {"eos_token_id": eos, "bos_token_id": config.get("bos_token_id")}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=1))
    return config
