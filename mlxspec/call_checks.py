"""Every parameter of a generation call, validated once, before anything runs."""
from __future__ import annotations

from typing import Optional

from mlxspec.errors import InvalidParameterError
from mlxspec.sampling import SamplingParams

MAX_TOKENS_LIMIT = 1_000_000
MAX_NUM_DRAFT = 64
SEED_MAX = 2**32 - 1  # numpy's legacy seeding range; what other tools accept


def check_options(max_tokens, temp, top_p, top_k, repetition_penalty, seed, num_draft) -> SamplingParams:
    """A front end's options (CLI, server), checked before anything is loaded or queued:
    the validated sampling parameters, or one InvalidParameterError for a value the engine
    would reject later, or reject with a worse message (NaN, inf, a negative seed)."""
    params = SamplingParams(temp, top_p, top_k, repetition_penalty).validated()  # the engine's own check
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 0 < max_tokens <= MAX_TOKENS_LIMIT:
        raise InvalidParameterError(f"max tokens must be in 1..{MAX_TOKENS_LIMIT}, got {max_tokens}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX):
        raise InvalidParameterError(f"seed must be in 0..{SEED_MAX}, got {seed}")
    if num_draft is not None and (isinstance(num_draft, bool) or not isinstance(num_draft, int)
                                  or not 0 <= num_draft <= MAX_NUM_DRAFT):
        raise InvalidParameterError(f"num-draft must be in 0..{MAX_NUM_DRAFT}, got {num_draft}")
    return params


def check_call(prompt, params, max_tokens, num_draft, vocab: Optional[int] = None,
               max_context: Optional[int] = None) -> tuple[list[int], SamplingParams, int]:
    """(prompt as token ids, validated sampling parameters, draft length), or one
    InvalidParameterError naming what is wrong."""
    if not isinstance(params, SamplingParams):
        raise InvalidParameterError("sampling parameters must be a SamplingParams")
    params = params.validated()
    try:
        prompt = [int(t) for t in prompt]
    except (TypeError, ValueError):
        raise InvalidParameterError("the prompt must be token ids") from None
    if not prompt:
        raise InvalidParameterError("the prompt is empty")
    if vocab and not all(0 <= t < vocab for t in prompt):
        raise InvalidParameterError(f"the prompt has token ids outside the vocabulary (0..{vocab - 1})")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
        raise InvalidParameterError(f"max tokens must be a positive integer, got {max_tokens}")
    if max_tokens > MAX_TOKENS_LIMIT:
        raise InvalidParameterError(f"max tokens {max_tokens} is absurd (limit {MAX_TOKENS_LIMIT})")
    if max_context and len(prompt) >= max_context:
        raise InvalidParameterError(f"the prompt has {len(prompt)} tokens; the model's context is {max_context}")
    k = num_draft
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_NUM_DRAFT:
        raise InvalidParameterError(f"num-draft must be in 0..{MAX_NUM_DRAFT}, got {k}")
    return prompt, params, k
