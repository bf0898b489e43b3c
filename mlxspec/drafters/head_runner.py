"""The target runner of the early-layer head drafter: layers 0..k-1 and their KV cache
are shared with the draft.

- draft_step() / draft_tree_step() push draft tokens through layers 0..k-1 (writing their
  cache) and the head (its own one-block cache);
- forward() reuses the layer-k hidden states the draft already computed for those tokens
  and runs only layers k..L-1 on them (layers 0..k-1 run only for tokens the draft has not
  seen: the last drafted token, copied tokens, plain steps, prefill);
- forward_tree() / accept_tree() verify a draft tree in one pass and keep one path;
- trim() rewinds every layer and the head's cache to the same length.

Cache layout, with `length` = tokens in layers k..L-1 (the verified sequence S[:-1]):
    layers 0..k-1 and head  hold `low_len` >= length tokens
    positions length..low_len-1 are "pending": their tokens, tree shape and layer-k
    hidden states are kept here and consumed by the next forward() if it starts with
    the same tokens in the same shape.
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx
from mlx_lm.models.base import create_attention_mask
from mlx_lm.models.cache import KVCache

from mlxspec.runtime.layered import LayeredModel
from mlxspec.runtime.exit_tap import over_cache, to_final
from mlxspec.runtime.tree_attention import ancestor_matrix, compact, tree_mask
from mlxspec.head.model import DraftHead
from mlxspec.runtime.target import TargetRunner


class HeadTargetRunner(TargetRunner):
    """Target runner whose layers 0..k-1 and cache are shared with the draft head."""
    pads = False  # the head's cache is written from every row a forward runs

    def __init__(self, model, head: DraftHead):
        super().__init__(model)
        self._layered = LayeredModel(model)
        self.head = head
        self.k = head.config.exit_layer
        self.head_cache = KVCache()
        self.low_len = 0  # tokens in layers 0..k-1 and in the head's cache
        self._pend_tokens: list[int] = []
        self._pend_h: list[mx.array] = []
        self._pend_par: list[int] = []  # each pending token's parent (index among them; -1: none)
        # final normalised hidden states of the last forward (feature-input heads)
        self._feats: Optional[mx.array] = None
        self._feats_base = 0
        self._tree = None  # (start, layer-k states, final states) of an unaccepted tree
        self.reused = 0  # tokens whose lower layers forward() did not recompute
        # optional recorder(start, h_low, hn) of every _rebuild_head (mlxspec.adapt.buffer)
        self.recorder = None

    # -- lower half (layers 0..k-1 + head) ---------------------------------------------
    def _lower(self, tokens: list[int]) -> mx.array:
        h = self.lm.run_layers(self.lm.embed(tokens), 0, self.k, self.cache)
        self.low_len += len(tokens)
        return h

    def _rewind_lower(self, n: int) -> None:
        if n <= 0:
            return
        for c in self.cache[: self.k]:
            c.trim(n)
        self.head_cache.trim(n)
        self.low_len -= n

    def feature_at(self, pos: int) -> Optional[mx.array]:
        """The target's final normalised hidden state at `pos`, if the last forward
        computed it (the feature a feature-input head drafts the next token from)."""
        i = pos - self._feats_base
        if self._feats is None or not 0 <= i < self._feats.shape[0]:
            return None
        return self._feats[i]

    def last_feature(self) -> Optional[mx.array]:
        return self.feature_at(self.length - 1)

    def draft_step(self, token: int, feat: Optional[mx.array] = None) -> mx.array:
        """Feed one token (at position low_len) through layers 0..k-1 and the head, the
        head given `feat` (the previous position's final hidden state, true or
        predicted); return the head's predicted final normalised hidden state (d,)."""
        h = self._lower([int(token)])
        f = None if feat is None else feat.reshape(1, 1, -1)
        y = self.head(h, f, None, self.head_cache)
        self._pend_par.append(len(self._pend_tokens) - 1)
        self._pend_tokens.append(int(token))
        self._pend_h.append(h)
        return y[0, -1]

    def draft_tree_step(self, tokens: list[int], feats: Optional[mx.array], flat_parents: list[int]) -> mx.array:
        """Feed draft-tree nodes through layers 0..k-1 and the head at once: `tokens` are
        the last len(tokens) entries of the tree `flat_parents` (entry 0 the root, parents
        before children), whose earlier entries were fed already. `feats` (B, d): each
        node's parent's predicted feature. Returns the head's predictions (B, d)."""
        n = len(tokens)
        anc = ancestor_matrix(flat_parents)
        start = self.length
        if self.low_len != start + len(flat_parents) - n:
            raise RuntimeError("draft tree nodes fed out of order")
        mask = tree_mask(start, anc[-n:])
        pos = mx.array(start + anc[-n:].sum(axis=1) - 1, dtype=mx.int32)
        h = self._tree_layers(self.lm.embed(tokens), 0, self.k, mask, pos)
        self.low_len += n
        f = None if feats is None else feats.reshape(1, n, -1)
        y = self.head(h, f, mask, self.head_cache, positions=pos)
        for b, t in enumerate(tokens):
            self._pend_tokens.append(int(t))
            self._pend_h.append(h[:, b : b + 1])
            self._pend_par.append(flat_parents[len(flat_parents) - n + b])
        return y[0]

    def _take_pending(self, tokens: list[int], parents: list[int]) -> list[mx.array]:
        """The layer-k states of the leading `tokens` (with these parents) that the draft
        already fed, in the same tree shape; the lower layers are rewound past them and
        nothing stays pending."""
        j, n_pend = 0, len(self._pend_tokens)
        while (j < min(n_pend, len(tokens)) and self._pend_tokens[j] == tokens[j]
               and self._pend_par[j] == parents[j]):
            j += 1
        self._rewind_lower(n_pend - j)
        reused = self._pend_h[:j]
        self._pend_tokens, self._pend_h, self._pend_par = [], [], []
        self.reused += j
        return reused

    # -- TargetRunner ---------------------------------------------------------------
    def forward(self, tokens: list[int], last_only: bool = False) -> mx.array:
        tokens = [int(t) for t in tokens]
        start = self.length
        parts = self._take_pending(tokens, list(range(-1, len(tokens) - 1)))
        j = len(parts)
        if j < len(tokens):
            parts.append(self._lower(tokens[j:]))
        h_low = parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=1)
        hn = to_final(self.lm, h_low, self.k, self.exit_tap, over_cache(self.lm, self.cache), self.in_prefill)
        self._rebuild_head(start, h_low, hn)
        out = self.lm.logits(hn[:, -1:] if last_only else hn)[0].astype(mx.float32)
        # the logits stay unevaluated (the engine reads ids); the head's state is computed meanwhile
        mx.async_eval(self._feats, self.head_cache.keys, self.head_cache.values)
        self.length += len(tokens)
        return out

    # -- tree verification (greedy) ---------------------------------------------------
    def forward_tree(self, tokens: list[int], parents: list[int]) -> mx.array:
        """Logits (1 + N, V) for a draft tree: tokens[0] is the root (S[-1]) and
        tokens[1 + i] node i, a child of parents[i] (-1: of the root). Draft steps must
        have fed a prefix of `tokens` in this order; their layer-k states are reused.
        Nothing is kept until accept_tree(path)."""
        tokens = [int(t) for t in tokens]
        flat_parents = [-1] + [int(p) + 1 for p in parents]
        anc = ancestor_matrix(flat_parents)
        depth = anc.sum(axis=1) - 1
        start = self.length
        parts = self._take_pending(tokens, flat_parents)
        j = len(parts)
        pos = mx.array(start + depth, dtype=mx.int32)
        if j < len(tokens):
            parts.append(self._tree_layers(self.lm.embed(tokens[j:]), 0, self.k, tree_mask(start, anc[j:]), pos[j:]))
            self.low_len += len(tokens) - j
        h_low = parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=1)
        mask = tree_mask(start, anc)
        hn = to_final(self.lm, h_low, self.k, self.exit_tap, lambda x, a, b: self._tree_layers(x, a, b, mask, pos),
                      self.in_prefill)
        out = self.lm.logits(hn)[0].astype(mx.float32)
        mx.async_eval(hn, h_low)
        self._tree = (start, h_low, hn)
        self.length += len(tokens)
        return out

    def accept_tree(self, path: list[int]) -> None:
        """Keep the root and the accepted nodes (flat indices into forward_tree's
        tokens, 0 = root, ascending), drop the rest of the tree from every cache."""
        start, h_low, hn = self._tree
        self._tree = None
        for c in self.cache:
            compact(c, start, path)
        self.length = self.low_len = start + len(path)
        idx = mx.array(path, dtype=mx.int32)
        self._rebuild_head(start, h_low[:, idx], hn[:, idx])
        mx.async_eval(self._feats, self.head_cache.keys, self.head_cache.values)

    def _rebuild_head(self, start: int, h_low: mx.array, hn: mx.array) -> None:
        """Rewrite the head's cache from `start` over verified tokens (layer-k states
        h_low, final states hn): the draft wrote those entries from predicted features,
        a feature-input head must see the true ones. Keeps hn as the latest features."""
        if self.head.uses_cache:
            self.head_cache.trim(self.head_cache.offset - start)
            feat = None
            if self.head.config.feature_input:
                prev = self.feature_at(start - 1)
                prev = mx.zeros_like(hn[:, :1]) if prev is None else prev.reshape(1, 1, -1)
                feat = mx.concatenate([prev, hn[:, :-1]], axis=1)
            self.head(h_low, feat, create_attention_mask(h_low, self.head_cache), self.head_cache)
        self._feats, self._feats_base = hn[0], start
        if self.recorder is not None:
            self.recorder(start, h_low, hn)

    def _hidden_last(self, tokens: list[int], project: bool = False) -> mx.array:
        # Prefill must fill the head's cache too, so it goes through forward().
        return self.forward(tokens, last_only=True)[-1]

    def trim(self, n: int) -> None:
        if n <= 0:
            return
        n = min(n, self.length)
        new = self.length - n
        for c in self.cache[self.k :]:
            c.trim(n)
        if self.low_len > new:
            self._rewind_lower(self.low_len - new)
        self._pend_tokens, self._pend_h, self._pend_par = [], [], []
        self.length = new
