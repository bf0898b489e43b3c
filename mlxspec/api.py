"""Public Python API, layered like mlx-lm: token events (Engine.tokens) ->
GenerationResponse stream (response.py) -> string.

    import mlxspec
    engine = mlxspec.load("smollm2-135m-instruct", draft="auto")
    for r in mlxspec.stream_generate(engine, "Write a haiku", max_tokens=64):
        print(r.text, end="", flush=True)
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence, Union

from mlxspec.engine import Engine
from mlxspec.response import GenerationResponse, SpecStats  # noqa: F401 (re-export)
from mlxspec.sampling import SamplingParams


def load(model: Optional[str] = None, draft: Optional[str] = "auto", **kwargs) -> Engine:
    """Load a target (registry name, local folder or hub id; the default model when
    None) and a drafter: "auto" (the best installed), "none", "lookup" (prompt lookup),
    "head", or a draft model's name or path. Copied-token branches join any drafter
    unless lookup=False."""
    from mlxspec.loading import load_engine

    return load_engine(model, draft, **kwargs)


def stream_generate(
    engine: Engine,
    prompt: Union[str, Sequence[int]],
    max_tokens: int = 256,
    temp: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    repetition_penalty: Optional[float] = None,
    seed: Optional[int] = None,
    num_draft: Optional[int] = None,
    stop: Sequence[str] = (),
    chat_template: bool = True,
    speculative: bool = True,
    on_prefill: Optional[Callable[[int, int], None]] = None,
    params: Optional[SamplingParams] = None,
) -> Iterator[GenerationResponse]:
    """Yield one GenerationResponse per generated token. `prompt` is text (the chat
    template is applied unless chat_template=False) or token ids (used as they are).
    `params` replaces temp/top_p/top_k/repetition_penalty. Closing the generator
    cancels generation; the engine stays usable. on_prefill(done, total) reports the
    prompt's progress."""
    if params is None:
        params = SamplingParams(temp=temp, top_p=top_p, top_k=top_k, repetition_penalty=repetition_penalty)
    tokens = engine.encode_prompt(prompt, chat_template=chat_template) if isinstance(prompt, str) else prompt
    return engine.stream(tokens, params, max_tokens=max_tokens, seed=seed, num_draft=num_draft, stop=stop,
                         speculative=speculative, on_prefill=on_prefill)


def stream_chat(engine: Engine, messages: list[dict], **kwargs) -> Iterator[GenerationResponse]:
    """stream_generate for a conversation: [{"role": ..., "content": ...}, ...] through
    the model's chat template."""
    from mlxspec.errors import InvalidParameterError

    if not messages or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
        raise InvalidParameterError("messages must be a non-empty list of {'role', 'content'} dicts")
    kwargs.pop("chat_template", None)
    return stream_generate(engine, engine.encode_chat(messages), **kwargs)


def generate(engine: Engine, prompt: Union[str, Sequence[int]], **kwargs) -> str:
    """Generate and return the whole text."""
    return "".join(r.text for r in stream_generate(engine, prompt, **kwargs))
