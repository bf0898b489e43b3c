"""A validated request -> the one generation the worker runs (a Plan), or an APIError.

Everything is checked here, before the request queues: the model it names, the options
this server cannot honour (a clear 400 rather than a silent difference), the sampling
values against the engine's own limits (call_checks.check_options, as the CLI), and the
prompt's tokens against the vocabulary and the context (call_checks.check_call)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

from mlxspec.call_checks import check_call, check_options
from mlxspec.errors import InvalidParameterError, MlxspecError, first_line
from mlxspec.serve.errors import APIError
from mlxspec.serve.schemas import STOP_CHARS, STOP_MAX, ChatRequest, CompletionRequest, Generation
from mlxspec.serve.served import DRAFT_ALIASES, ServedModel

ROLES = {"developer": "system"}  # OpenAI's newer name for the system role
# words of check_options' messages -> the request field they are about
_PARAM_WORDS = (("temperature", "temperature"), ("top-p", "top_p"), ("top-k", "top_k"),
                ("repetition penalty", "repetition_penalty"), ("repetition context", "repetition_context_size"),
                ("max tokens", "max_tokens"), ("seed", "seed"), ("num-draft", "num_draft"))


@dataclass
class Plan:
    """One generation: what Engine.stream takes, and how to answer."""
    tokens: list
    params: object  # SamplingParams
    max_tokens: int
    seed: Optional[int] = None
    num_draft: Optional[int] = None
    stop: list = field(default_factory=list)
    speculative: bool = True
    stream: bool = False
    include_usage: bool = False


def _unsupported(param: str, why: str) -> APIError:
    return APIError(400, f"'{param}' is not supported by this server: {why}", param=param, code="unsupported_parameter")


def _refuse_unsupported(req: Generation) -> None:
    if req.n not in (None, 1):
        raise _unsupported("n", f"it generates one choice per request (got n={req.n}); send n=1 or "
                           "several requests")
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(req, name) not in (None, 0, 0.0):
            raise _unsupported(name, "the engine has a repetition penalty instead (repetition_penalty, "
                               "e.g. 1.1)")
    if req.logit_bias:
        raise _unsupported("logit_bias", "sampling is verified against the model's own distribution")
    lp = getattr(req, "logprobs", None)
    if lp not in (None, False) or getattr(req, "top_logprobs", None) not in (None, 0):
        raise _unsupported("logprobs", "the engine gives no per-token probabilities without copying the full "
                           "vocabulary's distribution for every token")
    if isinstance(req, ChatRequest):
        for name in ("tools", "functions"):
            if getattr(req, name):
                raise _unsupported(name, "no tool or function calling")
        if req.tool_choice not in (None, "none") or req.function_call not in (None, "none"):
            raise _unsupported("tool_choice", "no tool or function calling")
        if req.response_format not in (None, {"type": "text"}):
            raise _unsupported("response_format", "only plain text replies")
    else:
        if req.echo:
            raise _unsupported("echo", "the reply holds only the generated text")
        if req.best_of not in (None, 1):
            raise _unsupported("best_of", "it generates one choice per request")
        if req.suffix:
            raise _unsupported("suffix", "no fill-in-the-middle")


def _param_of(message: str) -> Optional[str]:
    low = message.lower()
    return next((p for w, p in _PARAM_WORDS if low.startswith(w)), None)


def _options(req: Generation, max_tokens: Optional[int], served: ServedModel):
    n = served.default_max_tokens if max_tokens is None else max_tokens
    temp = 0.0 if req.temperature is None else req.temperature
    top_p = 1.0 if req.top_p is None else req.top_p
    top_k = 0 if req.top_k is None else req.top_k
    try:
        params = check_options(n, temp, top_p, top_k, req.repetition_penalty, req.seed, req.num_draft)
        if req.repetition_context_size is not None:
            params = replace(params, repetition_context_size=req.repetition_context_size).validated()
    except InvalidParameterError as exc:
        raise APIError(400, str(exc), param=_param_of(str(exc)), code="invalid_value") from None
    return params, n


def _speculative(req: Generation, served: ServedModel) -> bool:
    """The extensions `draft` and `verify` pick among what this server loaded."""
    if req.verify is not None and req.verify != served.verify:
        raise APIError(400, f"this server verifies with '{served.verify}'; start it with --verify {req.verify} "
                       f"for '{req.verify}'", param="verify", code="invalid_value")
    if req.draft is None or req.draft in DRAFT_ALIASES or req.draft == served.draft:
        return True
    if req.draft == "none":
        return False
    raise APIError(400, f"this server drafts with '{served.draft}'; a request may ask for 'none' (plain decoding) "
                   f"or '{served.draft}', not '{req.draft}' (start a server with --draft {req.draft})",
                   param="draft", code="invalid_value")


def _stops(stop) -> list:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > STOP_MAX:
        raise APIError(400, f"at most {STOP_MAX} stop strings, got {len(stops)}", param="stop", code="invalid_value")
    if any(len(s) > STOP_CHARS for s in stops):
        raise APIError(400, f"a stop string is longer than {STOP_CHARS} characters", param="stop", code="invalid_value")
    return [s for s in stops if s]


def check_model(model_id: Optional[str], served: ServedModel) -> None:
    if not served.knows(model_id):
        raise APIError(404, f"the model '{model_id}' does not exist; this server serves '{served.name}'",
                       param="model", code="model_not_found")


def _text(content, i: int) -> str:
    if content is None:
        raise APIError(400, f"messages[{i}] has no content", param=f"messages.{i}.content")
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.type != "text" or part.text is None:
            raise APIError(400, f"messages[{i}] has a '{part.type}' part; only text content is supported",
                           param=f"messages.{i}.content", code="unsupported_content")
        parts.append(part.text)
    return "".join(parts)


def chat_messages(req: ChatRequest) -> list[dict]:
    if not req.messages:
        raise APIError(400, "messages must be a non-empty list", param="messages", code="invalid_value")
    out = []
    for i, m in enumerate(req.messages):
        if m.role in ("tool", "function") or m.tool_calls:
            raise APIError(400, f"messages[{i}]: tool messages are not supported (no tool calling)",
                           param=f"messages.{i}.role", code="unsupported_content")
        out.append({"role": ROLES.get(m.role, m.role), "content": _text(m.content, i)})
    if not any(m["content"].strip() for m in out):
        raise APIError(400, "every message is empty", param="messages", code="invalid_value")
    return out


def _encode(fn, arg, what: str) -> list:
    try:
        return fn(arg)
    except MlxspecError as exc:
        raise APIError(400, str(exc), param=what) from None
    except Exception as exc:  # a chat template's own rule (e.g. roles must alternate), a tokenizer's
        raise APIError(400, f"could not encode the {what}: {first_line(exc)}", param=what) from None


def completion_tokens(req: CompletionRequest, served: ServedModel) -> list:
    p = req.prompt
    if isinstance(p, list) and p and isinstance(p[0], (str, list)):
        if len(p) != 1:
            raise _unsupported("prompt", f"one prompt per request, got a batch of {len(p)}")
        p = p[0]
    if isinstance(p, str):
        if not p.strip():
            raise APIError(400, "the prompt is empty", param="prompt", code="invalid_value")
        return _encode(served.encode_text, p, "prompt")
    return list(p)  # token ids, as given


def plan(req: Generation, tokens: list, served: ServedModel, max_tokens: Optional[int]) -> Plan:
    """The Plan for `req` whose prompt encodes to `tokens`; an APIError for anything wrong."""
    check_model(req.model, served)
    _refuse_unsupported(req)
    params, n = _options(req, max_tokens, served)
    speculative = _speculative(req, served)
    stop = _stops(req.stop)
    try:
        tokens, params, _ = check_call(tokens, params, n, req.num_draft or 0, served.vocab, served.max_context)
    except InvalidParameterError as exc:
        raise APIError(400, str(exc), param="prompt" if "prompt" in str(exc) else None, code="invalid_value") \
            from None
    include = bool(req.stream and req.stream_options is not None and req.stream_options.include_usage)
    return Plan(tokens, params, n, req.seed, req.num_draft, stop, speculative, bool(req.stream), include)


def chat_plan(req: ChatRequest, served: ServedModel) -> Plan:
    check_model(req.model, served)
    tokens = _encode(served.encode_chat, chat_messages(req), "messages")
    limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    return plan(req, tokens, served, limit)


def completion_plan(req: CompletionRequest, served: ServedModel) -> Plan:
    check_model(req.model, served)
    return plan(req, completion_tokens(req, served), served, req.max_tokens)
