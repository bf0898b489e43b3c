"""Runs the target model over an mlx-lm KV cache: prefill, batched verify, O(1) rewind."""
from __future__ import annotations

from typing import Callable, Optional

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

# Architectures whose logits are exactly lm_head(model.model(x)) (no soft-capping etc.).
_PLAIN_HEAD_ARCHS = {"llama", "qwen2", "qwen3", "mistral"}


class TargetRunner:
    def __init__(self, model):
        self.model = model
        self.cache = make_prompt_cache(model)
        self.length = 0  # tokens held in the cache

    def prefill(
        self,
        tokens: list[int],
        chunk_size: int = 512,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> mx.array:
        """Feed `tokens` in chunks; return the logits (V,) after the last one."""
        if not tokens:
            raise ValueError("prefill needs at least one token")
        done = 0
        while done < len(tokens):
            piece = tokens[done : done + chunk_size]
            done += len(piece)
            last = self._hidden_last(piece, project=done == len(tokens))
            if progress:
                progress(done, len(tokens))
        return last

    def _hidden_last(self, tokens: list[int], project: bool = False) -> mx.array:
        """Run a prefill chunk without the LM head over every position: for a 150k
        vocabulary the head over a whole chunk costs more than the layers."""
        inner = getattr(self.model, "model", None)
        head = getattr(self.model, "lm_head", None)
        if head is None and inner is not None:
            head = inner.embed_tokens.as_linear  # tied embeddings
        if getattr(self.model, "model_type", None) not in _PLAIN_HEAD_ARCHS:
            return self.forward(tokens)[-1]
        h = inner(mx.array(tokens, dtype=mx.uint32)[None], cache=self.cache)
        self.length += len(tokens)
        if not project:
            mx.eval(h)
            return h[0, -1]
        out = head(h[:, -1:])[0, -1].astype(mx.float32)
        mx.eval(out)
        return out

    def forward(self, tokens: list[int], last_only: bool = False) -> mx.array:
        """Logits (T, V) in float32 for `tokens` appended to the cache."""
        out = self.model(mx.array(tokens, dtype=mx.uint32)[None], cache=self.cache)[0]
        if last_only:
            out = out[-1:]
        out = out.astype(mx.float32)
        mx.eval(out)
        self.length += len(tokens)
        return out

    def trim(self, n: int) -> None:
        """Drop the last n tokens from the cache (rejected drafts)."""
        if n <= 0:
            return
        for c in self.cache:
            c.trim(n)
        self.length -= n
