"""The `usage` object of a reply: OpenAI's token counts, with the prompt's cached prefix
in prompt_tokens_details.cached_tokens, plus an `mlxspec` extension with what speculation
did (the same numbers `mlxspec generate --json` reports)."""
from __future__ import annotations

from typing import Optional

EXTENSION = "mlxspec"


def usage(plan, last, completion_tokens: int, prefilled: Optional[int], ttft: Optional[float],
          queue_wait: float) -> dict:
    """`last`: the reply's last GenerationResponse (None when nothing was generated);
    `prefilled`: the prompt tokens the engine had to run (the rest came from its cache)."""
    prompt = len(plan.tokens)
    ran = prompt if prefilled is None else int(prefilled)
    ext = {
        "prompt_tokens_prefilled": ran,
        "generation_tps": round(last.generation_tps, 3) if last else 0.0,
        "prompt_tps": round(last.prompt_tps or 0.0, 3) if last else 0.0,
        "time_to_first_token_s": round(ttft, 4) if ttft is not None else None,
        "queue_wait_s": round(max(0.0, queue_wait), 4),
        "peak_memory_gb": round(last.peak_memory, 4) if last else 0.0,
    }
    if last is not None:
        ext.update(last.stats.as_dict())  # method, rounds, drafted, accepted, acceptance_rate, ...
        ext["drafter"] = ext.pop("method")
    else:
        ext.update(drafter="plain", rounds=0, drafted=0, accepted=0, acceptance_rate=0.0, mean_accepted_length=0.0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": prompt - ran},
        EXTENSION: ext,
    }
