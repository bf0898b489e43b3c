"""Per-layer entry/exit over mlx-lm's own model modules (llama family incl. SmolLM2, qwen2).

mlx-lm's `Model.__call__` runs every layer in one go. Early-layer drafting needs to stop
after layer k, keep the hidden state, and later resume from layer k. `LayeredModel`
wraps an mlx-lm model without copying or renaming anything (its checkpoints keep
loading with mlx-lm's weight names) and exposes:

    h = lm.embed(tokens)                       # (1, T, d)
    h = lm.run_layers(h, 0, k, cache)          # layers [0, k) over the shared KV cache
    h = lm.run_layers(h, k, lm.num_layers, cache)
    logits = lm.logits(lm.norm(h))             # == model(tokens, cache)

`cache` is always the full per-layer list from `make_prompt_cache(model)`; only the
entries of the layers that run are read and written.
"""
from __future__ import annotations

from typing import Optional, Sequence

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.base import create_attention_mask

from mlxspec.errors import MlxspecError

SUPPORTED = ("llama", "qwen2")


class UnsupportedArchitectureError(MlxspecError):
    pass


class LayeredModel:
    def __init__(self, model: nn.Module):
        inner = getattr(model, "model", None)
        needed = ("embed_tokens", "layers", "norm")
        if inner is None or not all(hasattr(inner, a) for a in needed):
            raise UnsupportedArchitectureError(
                f"model type {getattr(model, 'model_type', type(model).__name__)!r} does not "
                "expose embed_tokens/layers/norm; early-layer drafting supports "
                + ", ".join(SUPPORTED)
            )
        if isinstance(inner.embed_tokens, nn.QuantizedEmbedding):
            raise UnsupportedArchitectureError(
                "quantized embeddings are not supported by the draft head; use a float model"
            )
        self.model = model
        self.inner = inner
        self.layers = inner.layers
        self.num_layers = len(inner.layers)
        args = getattr(model, "args", None)
        self.model_type = getattr(args, "model_type", None) or getattr(model, "model_type", "")
        self.tied = not hasattr(model, "lm_head")
        w = inner.embed_tokens.weight
        self.vocab_size = int(w.shape[0])
        self.hidden_size = int(w.shape[1])
        self.sliding_window = getattr(inner, "sliding_window", None)

    # -- pieces -----------------------------------------------------------------------
    def embed(self, tokens) -> mx.array:
        if not isinstance(tokens, mx.array):
            tokens = mx.array(list(tokens), dtype=mx.uint32)
        if tokens.ndim == 1:
            tokens = tokens[None]
        return self.inner.embed_tokens(tokens)

    def _masks(self, h: mx.array, cache_entry):
        full = create_attention_mask(h, cache_entry)
        swa = None
        if self.sliding_window is not None:
            swa = create_attention_mask(h, cache_entry, window_size=self.sliding_window)
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
        must hold the same number of cached tokens (the mask is built from layer start)."""
        if start >= end:
            return h
        c0 = cache[start] if cache is not None else None
        if mask is None:
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
    def lm_head_weight(self) -> mx.array:
        """(V, d) rows of the output projection (tied embedding or lm_head)."""
        if self.tied:
            return self.inner.embed_tokens.weight
        lm = self.model.lm_head
        if isinstance(lm, nn.QuantizedLinear):
            raise UnsupportedArchitectureError("quantized lm_head is not supported by the draft head")
        return lm.weight

    def logits(self, hn: mx.array) -> mx.array:
        if self.tied:
            return self.inner.embed_tokens.as_linear(hn)
        return self.model.lm_head(hn)

    def __call__(self, tokens, cache=None) -> mx.array:
        """Full forward, same result as the wrapped model(tokens, cache)."""
        h = self.run_layers(self.embed(tokens), 0, self.num_layers, cache)
        return self.logits(self.norm(h))

    def fingerprint(self) -> dict:
        """Cheap identity of the target's weights, stored in head files to catch a head
        trained for another model."""
        w = self.inner.embed_tokens.weight
        probe = mx.concatenate([w[:4, :8].reshape(-1), w[-4:, :8].reshape(-1)]).astype(mx.float32)
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

    mod = importlib.import_module(type(model).__module__)
    if not hasattr(mod, "TransformerBlock") or not hasattr(model, "args"):
        raise UnsupportedArchitectureError(
            f"no TransformerBlock in {mod.__name__}; early-layer drafting supports "
            + ", ".join(SUPPORTED)
        )
    return mod.TransformerBlock, mod.ModelArgs, model.args
