"""On-device incremental adaptation of the draft head (EvoSpec, issue 15).

    buffer.py  StateBuffer: the target's states of verified tokens (the runner's
               `recorder` hook + the verified token stream), float16, capped; TokenCounts
    online.py  OnlineTrainer: time-boxed AdamW slices with a curriculum and replay
               (heads of the transformer-block kind)
    ridge_trainer.py  RidgeTrainer: closed-form refits of a linear head (the kind new
               heads are), its ridge statistics as the "optimiser state"
    state.py   the adapted head + optimiser + counters + token counts, atomic per update
    adapter.py Adapter: the pieces above for one model
    idle.py    IdleTrainer: training between replies, for the chat and the server

`Adapter` ties them together for one model; the engine/CLI wiring only has to call
attach(runner), reset_tokens/extend_tokens (from the drafter's reset/extend),
end_reply(acceptance) and update(budget_s, stop).
"""
from __future__ import annotations

__all__ = ["Adapter", "AdaptSettings", "OnlineTrainer", "RidgeTrainer", "StateBuffer", "TokenCounts"]

_HOMES = {"Adapter": "adapter", "AdaptSettings": "online", "OnlineTrainer": "online",
          "RidgeTrainer": "ridge_trainer", "StateBuffer": "buffer", "TokenCounts": "buffer"}


def __getattr__(name):
    # Lazy, so that importing mlxspec.adapt.idle (the chat's start-up) does not load MLX.
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"mlxspec.adapt.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'mlxspec.adapt' has no attribute {name!r}")
