"""Status-bar text: live speed and speculation stats of the current (or last) reply."""
from __future__ import annotations

from typing import Optional

SEP = " · "


def reply_stats(r, plain_tps: Optional[float]) -> dict:
    """The numbers worth keeping from a GenerationResponse (saved with the reply)."""
    s = r.stats
    d = {
        "tokens": r.generation_tokens,
        "tps": round(r.generation_tps, 2),
        "prompt_tokens": r.prompt_tokens,
        "method": s.method,
        "rounds": s.rounds,
        "drafted": s.drafted,
        "accepted": s.accepted,
        "acceptance": round(s.acceptance_rate, 4),
        "mean_len": round(s.mean_accepted_length, 3),
        "draft_vocab": s.draft_vocab,
        "fallback": bool(s.fallback),
        "peak_gb": round(r.peak_memory, 3),
    }
    if s.verify != "exact":
        d["verify"] = s.verify
    if s.verify == "relaxed":  # what relaxation cost (mlxspec/relaxed.py)
        d["relaxed_tokens"] = s.extra.get("relaxed_tokens", 0)
        d["tv_mean"] = round(s.extra.get("tv_mean", 0.0), 4)
    if plain_tps and s.rounds > 0:  # a speedup only where something speculated
        d["plain_tps"] = round(plain_tps, 2)
        d["speedup"] = round(r.generation_tps / plain_tps, 3)
    return d


def speedup(stats: dict) -> Optional[float]:
    """The reply's speedup over plain decoding; none for a reply without speculation
    (replies saved before "rounds" was kept count their drafts instead)."""
    if not stats.get("rounds", stats.get("drafted")):
        return None
    return stats.get("speedup")


def reply_footer(finish: str, stats: dict) -> str:
    """The line under a finished reply."""
    bits = {"stopped": ["stopped"], "length": ["max tokens reached"], "error": ["failed"]}.get(finish, [])
    if stats:
        bits.append(f"{stats['tokens']} tokens at {stats['tps']:.1f} tok/s")
        if stats.get("drafted"):
            bits.append(f"{stats['acceptance']:.0%} of drafts accepted")
        if speedup(stats):
            bits.append(f"{speedup(stats):.2f}× vs plain")
        if stats.get("verify") == "relaxed":
            bits.append(f"relaxed: {stats['relaxed_tokens']} tokens departed from the target "
                        f"(mean TV {stats['tv_mean']:.3f})")
    return " · ".join(bits)


def _short(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def status_line(stats: dict, model: str, draft: str, state: str = "",
                width: Optional[int] = None, adapt: tuple[str, str] = ("", "")) -> str:
    """One line: model · draft · tok/s · acceptance · mean length · vocab · speedup ·
    head trend · state. `adapt`: (word, trend) of an adapting head (tui/adapting.py).
    With `width`, the least useful parts go first until the line fits (it never wraps)."""
    draft = draft or "none"
    label = draft if ":" in draft else f"draft: {draft}"  # "draft:x" / "head:x" say it already
    parts = [(9, model or "no model"), (7, label)]  # (keep priority, text)
    if stats:
        parts.append((8, f"{stats['tps']:.1f} tok/s"))
        if stats.get("drafted"):
            parts.append((5, f"accept {stats['acceptance']:.0%}"))
            parts.append((3, f"len {stats['mean_len']:.2f}"))
        else:
            parts.append((2, "accept –"))
        if stats.get("draft_vocab"):
            parts.append((1, f"vocab {stats['draft_vocab']}"))
        if speedup(stats):
            parts.append((6, f"{speedup(stats):.2f}× plain"))
        if stats.get("fallback"):
            parts.append((4, "fallback: plain"))
        if stats.get("verify") == "relaxed":  # never lossless: always visible
            parts.append((9.5, f"relaxed ({stats['relaxed_tokens']} off)"))
    word, trend = adapt
    if trend:
        parts.append((5.5, trend))
    if word:
        parts.append((8.5, word))
    if state:
        parts.append((10, state))
    joined = lambda: SEP.join(t for _, t in parts)  # noqa: E731
    if width is None or len(joined()) <= width:
        return joined()
    # Too long: shorten names and drop the state's hint "(esc to stop)" first...
    parts = [(p, _short(t, 24) if p in (7, 9) else t.split(" (")[0] if p == 10 else t) for p, t in parts]
    while len(parts) > 1 and len(joined()) > width:  # ...then drop the least useful parts
        parts.remove(min(parts, key=lambda pt: pt[0]))
    return _short(joined(), max(width, 1))
