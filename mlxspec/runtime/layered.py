"""Per-layer entry/exit over mlx-lm's own model modules, for the architectures in ARCHS.

mlx-lm's `Model.__call__` runs every layer in one go. Early-layer drafting needs to stop
after layer k, keep the hidden state, and later resume from layer k. `LayeredModel`
wraps an mlx-lm model without copying or renaming anything (its checkpoints keep
loading with mlx-lm's weight names) and exposes:

    h = lm.embed(tokens)                       # (1, T, d)
    h = lm.run_layers(h, 0, k, cache)          # layers [0, k) over the shared KV cache
    h = lm.run_layers(h, k, lm.num_layers, cache)
    logits = lm.logits(lm.norm(h))             # == model(tokens, cache)
    rows = lm.lm_head_rows(ids); rows(hn)      # == logits(hn)[..., ids], any weight format

`cache` is always the full per-layer list from `make_prompt_cache(model)`; only the
entries of the layers that run are read and written. Float (f32/bf16/f16) and mlx-lm
quantized (QuantizedLinear / QuantizedEmbedding) weights both work.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models import rope_utils
from mlx_lm.models.base import create_attention_mask

from mlxspec.errors import MlxspecError
from mlxspec.runtime.weights import QUANTIZED, HeadRows, RowView, dense_params, dequantized  # noqa: F401


@dataclass(frozen=True)
class Arch:
    module: str  # the mlx_lm.models module that implements it
    embed_scale: bool = False  # gemma: embeddings times sqrt(hidden_size)
    array_mask: bool = False  # its attention reads mask.dtype: no "causal" string
    softcap: bool = False  # gemma2: logits = tanh(x / cap) * cap


# Each one is checked by tests/test_archs.py (layers, tree attention, formats).
ARCHS = {
    "llama": Arch("llama"),
    "mistral": Arch("llama"),  # mlx-lm loads mistral with its llama module
    "qwen2": Arch("qwen2"),
    "qwen3": Arch("qwen3"),
    "gemma": Arch("gemma", embed_scale=True),
    "gemma2": Arch("gemma2", embed_scale=True, array_mask=True, softcap=True),
}
SUPPORTED = tuple(ARCHS)
# RoPE modules that take one offset per batch row (tree attention puts tokens there).
# Not DynamicNTKScalingRoPE: its base depends on the chunk length.
TREE_ROPES = (nn.RoPE,) + tuple(getattr(rope_utils, n) for n in (
    "Llama3RoPE", "YarnRoPE", "SuScaledRoPE", "ProportionalRoPE") if hasattr(rope_utils, n))


class UnsupportedArchitectureError(MlxspecError):
    pass


def model_type_of(model) -> str:
    args = getattr(model, "args", None)
    return str(getattr(args, "model_type", None) or getattr(model, "model_type", None)
               or type(model).__name__)


def check_architecture(model) -> Arch:
    """The Arch of `model`, or UnsupportedArchitectureError naming it and the list."""
    name = model_type_of(model)
    arch = ARCHS.get(name)
    module = type(model).__module__
    inner = getattr(model, "model", None)
    ok = arch is not None and module == f"mlx_lm.models.{arch.module}" and all(
        hasattr(inner, a) for a in ("embed_tokens", "layers", "norm"))
    if not ok:
        raise UnsupportedArchitectureError(
            f"model architecture {name!r} is not supported by early-layer drafting and "
            f"tree attention (supported: {', '.join(SUPPORTED)})")
    return arch


class LayeredModel:
    def __init__(self, model: nn.Module):
        self.arch = check_architecture(model)
        inner = model.model
        self.model = model
        self.inner = inner
        self.layers = inner.layers
        self.num_layers = len(inner.layers)
        self.model_type = model_type_of(model)
        args = model.args
        self.tied = not hasattr(model, "lm_head")
        self.vocab_size = int(inner.embed_tokens.weight.shape[0])
        self.hidden_size = int(args.hidden_size)
        self.sliding_window = getattr(inner, "sliding_window", None)
        if not any(getattr(layer, "use_sliding", False) for layer in self.layers):
            self.sliding_window = None
        self.softcap = float(args.final_logit_softcapping) if self.arch.softcap else None
        self._dense = None

    @property
    def quantized(self) -> bool:
        return isinstance(self._head_layer, QUANTIZED)

    @property
    def supports_tree(self) -> bool:
        """tree_attention works on every layer: no sliding-window layers, and RoPE that
        takes per-token positions."""
        return self.sliding_window is None and all(
            isinstance(getattr(layer.self_attn, "rope", None), TREE_ROPES) for layer in self.layers)

    # -- pieces -----------------------------------------------------------------------
    def embed(self, tokens) -> mx.array:
        if not isinstance(tokens, mx.array):
            tokens = mx.array(list(tokens), dtype=mx.uint32)
        if tokens.ndim == 1:
            tokens = tokens[None]
        h = self.inner.embed_tokens(tokens)
        if self.arch.embed_scale:  # as gemma's model does it
            h = h * (self.hidden_size**0.5)
        return h

    def _masks(self, h: mx.array, cache_entry):
        arr = self.arch.array_mask
        full = create_attention_mask(h, cache_entry, return_array=arr)
        swa = None
        if self.sliding_window is not None:
            swa = create_attention_mask(h, cache_entry, window_size=self.sliding_window, return_array=arr)
        return full, swa

    def run_layers(
        self,
        h: mx.array,
        start: int,
        end: int,
        cache: Optional[Sequence] = None,
        mask=None,
    ) -> mx.array:
        """Run layers [start, end) on hidden states h (B, T, d). Every layer in the range
        must hold the same number of cached tokens (the mask is built from layer start).
        mask: None (causal over the cache), "causal", or an array for every layer."""
        if start >= end:
            return h
        c0 = cache[start] if cache is not None else None
        if mask is None or (isinstance(mask, str) and (self.arch.array_mask or self.sliding_window)):
            full, swa = self._masks(h, c0)
        else:
            full, swa = mask, mask
        for i in range(start, end):
            layer = self.layers[i]
            m = swa if getattr(layer, "use_sliding", False) else full
            h = layer(h, m, cache[i] if cache is not None else None)
        return h

    def norm(self, h: mx.array) -> mx.array:
        return self.inner.norm(h)

    @property
    def _head_layer(self):
        return self.inner.embed_tokens if self.tied else self.model.lm_head

    def logits(self, hn: mx.array) -> mx.array:
        out = self.inner.embed_tokens.as_linear(hn) if self.tied else self.model.lm_head(hn)
        if self.softcap:
            out = mx.tanh(out / self.softcap) * self.softcap
        return out

    def lm_head_rows(self, ids) -> HeadRows:
        """The LM head over vocabulary rows `ids` only (draft logits over a subset)."""
        return HeadRows(self._head_layer, ids, self.softcap)

    def lm_head_dense(self) -> mx.array:
        """(V, d) float32 LM-head rows, dequantized; computed once, then cached."""
        if self._dense is None:
            self._dense = dequantized(self._head_layer).astype(mx.float32)
            mx.eval(self._dense)
        return self._dense

    def lm_head_view(self) -> RowView:
        """(V, d) rows, float32 on demand ([ids]): neighbour search without a dense copy."""
        return RowView(self._head_layer, self.hidden_size)

    @property
    def lm_head_weight(self) -> mx.array:
        """(V, d) rows of the output projection: the weight itself for float models
        (no copy), the dequantized float32 matrix for quantized ones."""
        if self.quantized:
            return self.lm_head_dense()
        return self._head_layer.weight

    def __call__(self, tokens, cache=None) -> mx.array:
        """Full forward, same result as the wrapped model(tokens, cache)."""
        h = self.run_layers(self.embed(tokens), 0, self.num_layers, cache)
        return self.logits(self.norm(h))

    def fingerprint(self) -> dict:
        """Cheap identity of the target's weights, stored in head files to catch a head
        trained for another model (dequantized rows: the packed ints mean nothing)."""
        emb = self.inner.embed_tokens
        V = self.vocab_size
        rows = emb(mx.array([0, 1, 2, 3, V - 4, V - 3, V - 2, V - 1]))
        probe = rows[:, :8].reshape(-1).astype(mx.float32)
        return {
            "model_type": str(self.model_type),
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "vocab_size": self.vocab_size,
            "embed_probe": [round(float(x), 5) for x in probe.tolist()],
        }


def block_class_and_args(model: nn.Module):
    """mlx-lm's TransformerBlock class and ModelArgs of `model`'s architecture, so a
    draft-head block is built exactly like one of the target's layers."""
    import importlib

    check_architecture(model)
    mod = importlib.import_module(type(model).__module__)
    return mod.TransformerBlock, mod.ModelArgs, model.args
