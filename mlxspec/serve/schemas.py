"""The request bodies, as pydantic models: OpenAI's chat and completions parameters plus
mlxspec's extensions (top_k, repetition_penalty, draft, num_draft, verify), as mlx_lm.server
adds its own.

Strict types: a string where a number belongs, a float where an integer belongs, or a bool
where a number belongs is a 400 naming the field, not a silent conversion. Unknown fields
are ignored (clients send `user`, `metadata` and the like); fields that would change the
answer in a way this server cannot honour (tools, logit_bias, ...) are refused by
params.py with a message saying so. Values are checked against the engine's own limits
in params.py (the CLI's limits)."""
from __future__ import annotations

from typing import Any, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

STOP_MAX = 16  # stop strings per request
STOP_CHARS = 1000  # characters of one stop string
ID_CHARS = 4096  # a model / drafter name (PATH_MAX)


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(_Body):
    include_usage: Optional[bool] = None


class ContentPart(_Body):
    type: str
    text: Optional[str] = None


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Optional[Union[str, List[ContentPart]]] = None
    name: Optional[str] = None
    tool_calls: Optional[Any] = None


class Generation(_Body):
    """What both endpoints take."""

    model: Optional[str] = Field(None, max_length=ID_CHARS)
    max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    seed: Optional[int] = None
    stop: Optional[Union[str, List[str]]] = None
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    n: Optional[int] = None
    frequency_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    logit_bias: Optional[Any] = None
    # extensions (mlxspec's, as mlx_lm.server's top_k / draft_model / num_draft_tokens)
    top_k: Optional[int] = None
    repetition_penalty: Optional[float] = None
    repetition_context_size: Optional[int] = None
    draft: Optional[str] = Field(None, max_length=ID_CHARS)
    num_draft: Optional[int] = None
    verify: Optional[str] = Field(None, max_length=64)


class ChatRequest(Generation):
    messages: List[Message]
    max_completion_tokens: Optional[int] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = None
    tools: Optional[Any] = None
    tool_choice: Optional[Any] = None
    functions: Optional[Any] = None
    function_call: Optional[Any] = None
    response_format: Optional[Any] = None


class CompletionRequest(Generation):
    prompt: Union[str, List[int], List[str], List[List[int]]]
    logprobs: Optional[int] = None
    echo: Optional[bool] = None
    best_of: Optional[int] = None
    suffix: Optional[str] = None
