"""Runs the target model over an mlx-lm KV cache: prefill, batched verify, O(1) rewind."""
from __future__ import annotations

from typing import Callable, Optional

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache


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
        logits = None
        while done < len(tokens):
            piece = tokens[done : done + chunk_size]
            logits = self.forward(piece, last_only=True)
            done += len(piece)
            if progress:
                progress(done, len(tokens))
        return logits[-1]

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
