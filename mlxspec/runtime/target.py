"""Runs the target model over an mlx-lm KV cache: prefill, batched verification of a
draft chain or tree, O(1) rewind (a chain's rejected tail is trimmed; a tree's kept
path is compacted to the front of its slots, tree_attention.py)."""
from __future__ import annotations

from typing import Callable, Optional

import mlx.core as mx
from mlx_lm.models.cache import KVCache, make_prompt_cache

from mlxspec.runtime.exit_tap import over_cache, to_final

# Architectures whose logits are exactly lm_head(model.model(x)) (no soft-capping etc.).
_PLAIN_HEAD_ARCHS = {"llama", "qwen2", "qwen3", "mistral"}


class TargetRunner:
    # Verification forwards may run extra rows that nobody reads (costs.padded_size): the
    # plain runner's caches drop them with the rejected nodes. Runners that keep states of
    # their own per row (a head's cache, ranks) do not pad.
    pads = True

    def __new__(cls, model, *args, **kwargs):
        # A target split over distributed ranks runs its steps round the ring: every place
        # that makes a runner for it gets the runner its pipeline names (mlxspec.distributed
        # sets both; nothing here imports it).
        pipe = getattr(model, "mlxspec_pipeline", None)
        if cls is TargetRunner and pipe is not None:
            cls = pipe.runner_class
        return super().__new__(cls)

    def __init__(self, model):
        self.model = model
        self.cache = make_prompt_cache(model)
        self.length = 0  # tokens held in the cache
        self._layered = None
        self._tree_start: Optional[int] = None
        self.exit_tap = None  # an observer of tapped layer states (runtime/exit_tap.py)
        self.in_prefill = False  # what the tap hears is the prompt's
        self._pad = 0  # rows of padding in the last verify(), dropped by keep()

    # -- layered execution, for trees ---------------------------------------------------
    @property
    def lm(self):
        """The target as mlx-lm layers (runtime/layered.py); None where unsupported."""
        if self._layered is None:
            from mlxspec.runtime.layered import LayeredModel, UnsupportedArchitectureError

            try:
                self._layered = LayeredModel(self.model)
            except UnsupportedArchitectureError:
                self._layered = False
        return self._layered or None

    @property
    def supports_tree(self) -> bool:
        """Tree attention rewrites positions and compacts entries of plain KV caches."""
        lm = self.lm
        return lm is not None and lm.supports_tree and all(type(c) is KVCache for c in self.cache)

    # -- prefill ----------------------------------------------------------------------
    def prefill(
        self,
        tokens: list[int],
        chunk_size: int = 512,
        progress: Optional[Callable[[int, int], None]] = None,
        logits: bool = True,
    ) -> Optional[mx.array]:
        """Feed `tokens` in chunks; return the logits (V,) after the last one (`logits`
        False: none, the cache evaluated; a drafter catching up needs no row)."""
        if not tokens:
            raise ValueError("prefill needs at least one token")
        done = 0
        self.in_prefill = True
        try:
            while done < len(tokens):
                piece = tokens[done : done + chunk_size]
                done += len(piece)
                last = self._hidden_last(piece, project=logits and done == len(tokens))
                if progress:
                    progress(done, len(tokens))
        finally:
            self.in_prefill = False
        if not logits:
            mx.eval(last)
            return None
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
        if self.exit_tap is not None and self.lm is not None:
            lm = self.lm
            h = to_final(lm, lm.embed(tokens), 0, self.exit_tap, over_cache(lm, self.cache), prompt=True)
        else:
            h = inner(mx.array(tokens, dtype=mx.uint32)[None], cache=self.cache)
        self.length += len(tokens)
        if not project:
            mx.eval(h)
            return h[0, -1]
        return head(h[:, -1:])[0, -1].astype(mx.float32)  # unevaluated: the engine reads ids

    # -- verification -------------------------------------------------------------------
    def forward(self, tokens, last_only: bool = False) -> mx.array:
        """Logits (T, V) in float32 for `tokens` (ids, or a 1-d array of them still on
        the device) appended to the cache; not evaluated (they stay on the device)."""
        x = tokens.astype(mx.uint32) if isinstance(tokens, mx.array) else mx.array(tokens, dtype=mx.uint32)
        if self.exit_tap is not None and self.lm is not None:
            lm = self.lm
            out = lm.logits(to_final(lm, lm.embed(x), 0, self.exit_tap, over_cache(lm, self.cache),
                                     self.in_prefill))[0]
        else:
            out = self.model(x[None], cache=self.cache)[0]
        if last_only:
            out = out[-1:]
        self.length += len(tokens)
        return out.astype(mx.float32)

    def forward_tree(self, tokens: list[int], parents: list[int]) -> mx.array:
        """Logits (1 + N, V) for a draft tree: tokens[0] is the root (the last verified
        token) and tokens[1 + i] node i, a child of parents[i] (-1: of the root).
        Nothing is kept until accept_tree(path)."""
        from mlxspec.runtime.tree_attention import tree_inputs

        lm = self.lm
        start = self.length
        pos, mask = tree_inputs(start, parents)
        h = lm.embed([int(t) for t in tokens])
        hn = to_final(lm, h, 0, self.exit_tap, lambda x, a, b: self._tree_layers(x, a, b, mask, pos), self.in_prefill)
        out = lm.logits(hn)[0].astype(mx.float32)
        self._tree_start = start
        self.length += len(tokens)
        return out

    def _tree_layers(self, h: mx.array, lo: int, hi: int, mask: mx.array, pos: mx.array) -> mx.array:
        from mlxspec.runtime.tree_attention import tree_block

        for i in range(lo, hi):
            h = tree_block(self.lm.layers[i], h, mask, self.cache[i], pos)
        return h

    def accept_tree(self, path: list[int]) -> None:
        """Keep the root and the accepted nodes (flat indices into forward_tree's tokens,
        0 = the root, ascending); drop the rest of the tree from every cache."""
        from mlxspec.runtime.tree_attention import compact

        start, self._tree_start = self._tree_start, None
        for c in self.cache:
            compact(c, start, path)
        self.length = start + len(path)

    @property
    def can_pad(self) -> bool:
        """Whether verify() pads now: never while a tap hears every row (exit_tap.py)."""
        return self.pads and self.exit_tap is None

    def verify(self, root: int, tree, rows: int = 0) -> mx.array:
        """Target logits for a draft (mlxspec.tree.DraftTree) after `root`: row 0 predicts
        the token after root, row i + 1 the token after node i. `rows`: run the forward
        over at least this many rows where it costs less (costs.padded_size); the padding
        repeats the root after the draft, is read by no one and attends to no later row."""
        tokens = [int(root)] + list(tree.tokens)
        pad = max(0, rows - len(tokens)) if self.can_pad else 0
        self._pad = pad
        if tree.is_chain:
            out = self.forward(tokens + [int(root)] * pad)
        else:  # extra children of the root: no draft node is their descendant
            out = self.forward_tree(tokens + [int(root)] * pad, list(tree.parents) + [-1] * pad)
        return out[: len(tokens)] if pad else out

    def keep(self, tree, path: list[int]) -> None:
        """After verify(): keep the root and the accepted path (node indices)."""
        pad, self._pad = self._pad, 0
        if tree.is_chain:
            self.trim(len(tree) + pad - len(path))
        else:
            self.accept_tree([0] + [i + 1 for i in path])

    def trim(self, n: int) -> None:
        """Drop the last n tokens from the cache (rejected drafts)."""
        if n <= 0:
            return
        for c in self.cache:
            c.trim(n)
        self.length -= n
