"""Status-bar text: live speed and speculation stats of the current (or last) reply."""
from __future__ import annotations

from typing import Optional


def reply_stats(r, plain_tps: Optional[float]) -> dict:
    """The numbers worth keeping from a GenerationResponse (saved with the reply)."""
    s = r.stats
    d = {
        "tokens": r.generation_tokens,
        "tps": round(r.generation_tps, 2),
        "prompt_tokens": r.prompt_tokens,
        "method": s.method,
        "drafted": s.drafted,
        "accepted": s.accepted,
        "acceptance": round(s.acceptance_rate, 4),
        "mean_len": round(s.mean_accepted_length, 3),
        "draft_vocab": s.draft_vocab,
        "fallback": bool(s.fallback),
        "peak_gb": round(r.peak_memory, 3),
    }
    if plain_tps:
        d["plain_tps"] = round(plain_tps, 2)
        d["speedup"] = round(r.generation_tps / plain_tps, 3)
    return d


def status_line(stats: dict, model: str, draft: str, state: str = "") -> str:
    """One line: model · draft · tok/s · acceptance · mean length · vocab · speedup."""
    parts = [model or "no model", f"draft: {draft or 'none'}"]
    if stats:
        parts.append(f"{stats['tps']:.1f} tok/s")
        if stats.get("drafted"):
            parts.append(f"accept {stats['acceptance']:.0%}")
            parts.append(f"len {stats['mean_len']:.2f}")
        else:
            parts.append("accept –")
        if stats.get("draft_vocab"):
            parts.append(f"vocab {stats['draft_vocab']}")
        if stats.get("speedup"):
            parts.append(f"{stats['speedup']:.2f}× plain")
        if stats.get("fallback"):
            parts.append("fallback: plain")
    if state:
        parts.append(state)
    return " · ".join(parts)
