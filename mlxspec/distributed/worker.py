"""The loop of a rank > 0: receive a command from the previous rank, pass it on, apply it
to this rank's block of layers and KV caches (one set per runner slot on rank 0)."""
from __future__ import annotations

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

from mlxspec.distributed.pipeline import COMPACT, DTYPES, FORWARD, NEW, STOP, TREE, TRIM, Pipeline
from mlxspec.runtime.tree_attention import compact, tree_block, tree_inputs


class _Slot:
    def __init__(self, model):
        self.cache = make_prompt_cache(model)
        self.length = 0
        self.tree_start = None


def serve(model, pipe: Pipeline) -> None:
    """Until rank 0 sends STOP (or is lost: RankLostError)."""
    slots: dict[int, _Slot] = {}
    lm, last = pipe.lm, pipe.rank == pipe.size - 1
    own = range(pipe.start, pipe.end)
    while True:
        head, payload, raw = pipe.receive_command()
        op, slot, n, _, dt, free = head[:6]
        if not last:
            for msg in raw:
                pipe.send(msg, pipe.next_rank)
        slots.pop(free, None)
        if op == STOP:
            return
        if op == NEW:
            slots[slot] = _Slot(model)
            continue
        s = slots[slot]
        if op == TRIM:
            for i in own:
                s.cache[i].trim(n)
            s.length -= n
        elif op == COMPACT:
            for i in own:
                compact(s.cache[i], s.tree_start, payload)
            s.length, s.tree_start = s.tree_start + len(payload), None
        elif op in (FORWARD, TREE):
            h = pipe.recv((1, n, lm.hidden_size), DTYPES[dt], pipe.prev_rank)
            if op == FORWARD:
                h = lm.run_layers(h, pipe.start, pipe.end, s.cache)
            else:
                pos, mask = tree_inputs(s.length, payload)
                for i in own:
                    h = tree_block(lm.layers[i], h, mask, s.cache[i], pos)
                s.tree_start = s.length
            mx.eval(h)
            s.length += n
            pipe.send(h, pipe.next_rank)
