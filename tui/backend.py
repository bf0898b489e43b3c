"""The real ChatBackend: an engine from `mlxspec.load`, driven through mlxspec's public API."""
from __future__ import annotations

import inspect
from typing import Iterator, Optional

from mlxspec.tui.contract import PrefillCallback


def load_backend(model: Optional[str], draft: str) -> "MlxspecBackend":
    import mlxspec

    return MlxspecBackend(mlxspec.load(model, draft))


class MlxspecBackend:
    def __init__(self, engine):
        self._engine = engine

    @property
    def model_name(self) -> str:
        return self._engine.model_name

    @property
    def draft_name(self) -> str:
        return self._engine.draft_name

    @property
    def plain_tps(self) -> Optional[float]:
        return getattr(self._engine, "plain_tps", None)

    def stream_chat(self, messages: list[dict], *, temp: float, top_p: float, max_tokens: int,
                    seed: Optional[int] = None,
                    on_prefill: Optional[PrefillCallback] = None) -> Iterator:
        import mlxspec

        kw = dict(max_tokens=max_tokens, temp=temp, top_p=top_p, seed=seed)
        if hasattr(mlxspec, "stream_chat"):
            fn, prompt = mlxspec.stream_chat, messages
        else:  # until mlxspec exports stream_chat: token ids from the model's chat template
            from mlxspec.prompting import encode_chat

            fn, prompt = mlxspec.stream_generate, encode_chat(self._engine.tokenizer, messages)
        if on_prefill is not None and _accepts(fn, "on_prefill"):
            kw["on_prefill"] = on_prefill
        return fn(self._engine, prompt, **kw)

    def reset(self) -> None:
        reset = getattr(self._engine, "reset", None)
        if reset is not None:
            reset()


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
