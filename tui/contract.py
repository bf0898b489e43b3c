"""What the chat needs from a model backend: the one interface between tui/ and mlxspec.

The real backend (tui/backend.py) wraps `mlxspec.load`; tests use a fake with the same
shape (tests/tui_fakes.py). Everything the app and its engine thread do with a model goes
through these members, so a change in the engine's internals cannot break the chat.
"""
from __future__ import annotations

import inspect
from typing import Callable, Iterator, Optional, Protocol, runtime_checkable

PrefillCallback = Callable[[int, int], None]  # (tokens done, tokens in the prompt)


@runtime_checkable
class ChatBackend(Protocol):
    """A loaded target model with its drafter."""

    model_name: str
    draft_name: str  # "none" when nothing speculates

    @property
    def plain_tps(self) -> Optional[float]:
        """Plain (non-speculative) decoding speed measured on this engine, if known."""

    def stream_chat(self, messages: list[dict], *, temp: float, top_p: float, max_tokens: int,
                    seed: Optional[int] = None,
                    on_prefill: Optional[PrefillCallback] = None) -> Iterator:
        """Yield one mlxspec GenerationResponse per token of the assistant's reply to
        `messages` ([{"role", "content"}, ...]). Closing the iterator cancels the reply;
        the backend stays usable and keeps its cache for the next turn."""

    def reset(self) -> None:
        """Forget cached state (after a failure mid-reply)."""

    def adaptation(self) -> Optional[dict]:
        """None when the drafter does not learn; else the adapting head's counters:
        {"acceptance": per-reply rates, oldest first, "updates": ..., "steps": ...}."""

    def idle_update(self, stop: Callable[[], bool], budget_s: float) -> dict:
        """Train the adapting head for at most `budget_s` seconds, checking `stop()` before
        each optimiser step; returns {"steps", "seconds"} (no steps when nothing adapts)."""


class BackendLoader(Protocol):
    def __call__(self, model: Optional[str], draft: str, **options) -> ChatBackend:
        """Load `model` (None = the default) with drafter `draft` (auto | none | head |
        a draft model); raises mlxspec.errors.MlxspecError for bad choices. `options`:
        engine settings given explicitly (adapt=True|False); absent ones keep the default."""


def mismatches(obj) -> list[str]:
    """What keeps `obj` from being a ChatBackend (runtime_checkable only checks names):
    missing members, and methods whose parameters differ from the contract's."""
    problems = []
    for name in ("model_name", "draft_name", "plain_tps"):
        if not hasattr(obj, name):
            problems.append(f"missing {name}")
    for name in ("stream_chat", "reset", "adaptation", "idle_update"):
        method = getattr(obj, name, None)
        if not callable(method):
            problems.append(f"missing {name}()")
            continue
        want = _params(getattr(ChatBackend, name), drop_self=True)
        got = _params(method, drop_self=False)
        if got != want:
            problems.append(f"{name}{got} differs from the contract's {name}{want}")
    return problems


def _params(fn, drop_self: bool) -> tuple:
    params = list(inspect.signature(fn).parameters.values())
    if drop_self:
        params = params[1:]
    return tuple((p.name, p.kind.name, p.default is inspect.Parameter.empty) for p in params)
