"""Early-exit counters for reports (bench rows, --stats): what a reply's verify_stats
hold, summed over runs, with tokens per full verification and each stage's time share."""
from __future__ import annotations

from typing import Optional

from mlxspec.hierarchy.loop import COUNTERS, STAGES

_SUMMED = COUNTERS + STAGES + ("full_emitted",)


def counters(extra: dict) -> Optional[dict]:
    """The early-exit counters of one reply's SpecStats.extra (None: no early-exit round)."""
    if "exit_layer" not in extra:
        return None
    return {k: extra.get(k, 0) for k in _SUMMED + ("exit_layer",)} | {"exit_agreement": extra.get("exit_agreement")}


def summed(runs: list) -> Optional[dict]:
    runs = [r for r in runs if r]
    if not runs:
        return None
    out = {k: sum(r.get(k, 0) for r in runs) for k in _SUMMED}
    out["exit_layer"] = runs[-1].get("exit_layer")
    out["exit_agreement"] = runs[-1].get("exit_agreement")  # the trained exit's, measured before the last run
    full = out["full_verifications"]
    out["tokens_per_full"] = round(out["full_emitted"] / full, 3) if full else None
    total = sum(out[k] for k in STAGES)
    for k in STAGES:
        out[k] = round(out[k], 4)
        out[k.replace("_s", "_share")] = round(out[k] / total, 3) if total else None
    return out


def describe(s: dict) -> str:
    full = s["full_verifications"]
    parts = [f"exit layer {s['exit_layer']}", f"{full} full verifications"]
    if s.get("exit_agreement") is not None:
        parts[0] += f" (trained, agreement {s['exit_agreement']:.0%})"
    if full:
        parts.append(f"{s['tokens_per_full']:.2f} tokens per full")
        checked = s["intermediate_checked"]
        if checked:
            parts.append(f"exit rejected {s['intermediate_rejected'] / checked:.0%} of {checked} drafts")
        if s["tentative_verified"]:
            parts.append(f"target kept {s['full_accepted'] / s['tentative_verified']:.0%} of tentative")
    parts.append(f"{s['single_level_rounds']} single-level rounds")
    if s.get("draft_share") is not None:
        parts.append("time draft {:.0%} / exit {:.0%} / full {:.0%} / single-level {:.0%}".format(
            s["draft_share"], s["intermediate_share"], s["full_share"], s["single_share"]))
    return ", ".join(parts)
