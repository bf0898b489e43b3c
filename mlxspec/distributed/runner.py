"""Rank 0's target runner over a pipelined target: TargetRunner's interface (prefill,
chain and tree verification, trim, tree compaction), each step sent round the ring.
It gives no layer access (`lm` is None): the head and early-exit verification need the
target's layers in one process, so they are not offered here."""
from __future__ import annotations

import weakref

import mlx.core as mx
from mlx_lm.models.cache import KVCache, make_prompt_cache

from mlxspec.distributed.pipeline import COMPACT, FORWARD, TREE, TRIM
from mlxspec.runtime.target import TargetRunner
from mlxspec.runtime.tree_attention import compact, tree_block, tree_inputs


class ShardedRunner(TargetRunner):
    pads = False  # every rank would have to drop the padding

    def __init__(self, model):
        self.model = model
        self.pipe = model.mlxspec_pipeline
        self.cache = make_prompt_cache(model)  # rank 0 fills the entries of its own layers
        self.length = 0
        self._layered = False
        self._tree_start = None
        self.slot = self.pipe.open_slot()
        weakref.finalize(self, self.pipe.close_slot, self.slot)

    @property
    def lm(self):
        return None

    @property
    def supports_tree(self) -> bool:
        return self.pipe.supports_tree and all(type(c) is KVCache for c in self.cache)

    def _through(self, op: int, tokens, parents=None) -> mx.array:
        """Final hidden states (1, T, d) of `tokens`: this rank's layers, then round the ring."""
        pipe, lm = self.pipe, self.pipe.lm
        h = lm.embed(tokens if isinstance(tokens, mx.array) else [int(t) for t in tokens])
        if op == FORWARD:
            h = lm.run_layers(h, pipe.start, pipe.end, self.cache)
        else:
            pos, mask = tree_inputs(self.length, parents)
            for i in range(pipe.start, pipe.end):
                h = tree_block(lm.layers[i], h, mask, self.cache[i], pos)
        mx.eval(h)
        pipe.command(op, self.slot, h.shape[1], [] if parents is None else parents, h.dtype)
        pipe.send(h, pipe.next_rank)
        out = pipe.recv(h.shape, h.dtype, pipe.prev_rank)
        self.length += len(tokens)
        return out

    def _logits(self, h: mx.array) -> mx.array:
        lm = self.pipe.lm
        out = lm.logits(lm.norm(h))[0].astype(mx.float32)
        mx.eval(out)
        return out

    def _hidden_last(self, tokens, project: bool = False) -> mx.array:
        h = self._through(FORWARD, tokens)
        return self._logits(h[:, -1:])[-1] if project else h[0, -1]

    def forward(self, tokens, last_only: bool = False) -> mx.array:
        h = self._through(FORWARD, tokens)
        return self._logits(h[:, -1:] if last_only else h)

    def forward_tree(self, tokens, parents) -> mx.array:
        start = self.length
        h = self._through(TREE, tokens, [int(p) for p in parents])
        self._tree_start = start
        return self._logits(h)

    def accept_tree(self, path) -> None:
        start, self._tree_start = self._tree_start, None
        path = [int(i) for i in path]
        for i in range(self.pipe.start, self.pipe.end):
            compact(self.cache[i], start, path)
        self.pipe.command(COMPACT, self.slot, 0, path)
        self.length = start + len(path)

    def trim(self, n: int) -> None:
        if n <= 0:
            return
        for i in range(self.pipe.start, self.pipe.end):
            self.cache[i].trim(n)
        self.pipe.command(TRIM, self.slot, n)
        self.length -= n
