"""Public Python API, layered like mlx-lm: token events -> GenerationResponse stream -> str.

    import mlxspec
    engine = mlxspec.load("smollm2-135m-instruct", draft="auto")
    for r in mlxspec.stream_generate(engine, "Write a haiku", max_tokens=64):
        print(r.text, end="", flush=True)
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence, Union

from mlxspec.engine import Engine
from mlxspec.response import GenerationResponse, SpecStats  # noqa: F401 (re-export)
from mlxspec.sampling import SamplingParams


def load(model: Optional[str] = None, draft: Optional[str] = "auto", **kwargs) -> Engine:
    """Load a target (registry name, local folder or hub id; default model when None) and
    a drafter: "auto" (best available), "none", "head", or a draft model name/path."""
    from mlxspec.loading import load_engine

    return load_engine(model, draft, **kwargs)


def _prompt_tokens(engine: Engine, prompt: Union[str, Sequence[int]], chat_template: bool) -> list[int]:
    if isinstance(prompt, str):
        return engine.encode_prompt(prompt, chat_template=chat_template)
    return list(prompt)


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
) -> Iterator[GenerationResponse]:
    """Yield one GenerationResponse per generated token. `prompt` is text (the chat
    template is applied unless chat_template=False) or token ids (used as they are).
    Closing the generator cancels generation; the engine stays usable."""
    params = SamplingParams(
        temp=temp, top_p=top_p, top_k=top_k, repetition_penalty=repetition_penalty
    ).validated()
    tokens = _prompt_tokens(engine, prompt, chat_template)
    yield from engine.stream(
        tokens,
        params,
        max_tokens=max_tokens,
        seed=seed,
        num_draft=num_draft,
        stop=stop,
        speculative=speculative,
    )


def generate(engine: Engine, prompt: Union[str, Sequence[int]], **kwargs) -> str:
    """Generate and return the whole text."""
    return "".join(r.text for r in stream_generate(engine, prompt, **kwargs))
