"""The real ChatBackend: an engine from `mlxspec.load`, driven through mlxspec's public API."""
from __future__ import annotations

from typing import Callable, Iterator, Optional

from mlxspec import Learning
from mlxspec.tui.contract import PrefillCallback


def load_backend(model: Optional[str], draft: str, **options) -> "MlxspecBackend":
    import mlxspec

    return MlxspecBackend(mlxspec.load(model, draft, **options))


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

        return mlxspec.stream_chat(self._engine, messages, max_tokens=max_tokens, temp=temp, top_p=top_p,
                                   seed=seed, on_prefill=on_prefill)

    def reset(self) -> None:
        self._engine.reset()

    def adaptation(self) -> Optional[dict]:
        return Learning(self._engine).adaptation()

    def idle_update(self, stop: Callable[[], bool], budget_s: float) -> dict:
        return Learning(self._engine).idle_update(stop, budget_s)
