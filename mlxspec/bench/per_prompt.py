"""Each method against mlxspec plain, prompt by prompt: what `mlxspec bench`'s mean over
prompts hides (one prompt below plain, a composition below one of its parts there).

Runs are paired by repetition: the i-th run of a method on a prompt and temperature with
the i-th run of the reference on the same prompt and temperature, which ran beside it.
A cell is the ratio of the repetitions' mean speeds, with the lowest single-repetition
ratio beside it (this machine's drift shows there first).
"""
from __future__ import annotations

import statistics
from collections import defaultdict

FLOOR = 0.97  # a prompt below this fraction of plain is flagged


def ratios(runs, reference: str = "mlxspec plain") -> dict:
    """{(temp, prompt): {method: (mean ratio, lowest ratio)}} against `reference`."""
    speeds = defaultdict(list)
    for r in runs:
        speeds[(r.temp, r.prompt, r.method)].append(r.tps)
    out: dict = {}
    for (temp, prompt, method), tps in speeds.items():
        ref = speeds.get((temp, prompt, reference))
        if not ref or method == reference:
            continue
        pairs = [(x, b) for x, b in zip(tps, ref) if b > 0]
        if not pairs:
            continue
        mean = statistics.mean(x for x, _ in pairs) / statistics.mean(b for _, b in pairs)
        out.setdefault((temp, prompt), {})[method] = (mean, min(x / b for x, b in pairs))
    return out


def format_ratios(table: dict, methods: list[str]) -> str:
    """The table as text, a block per temperature (a line per method, a column per
    prompt), and a last line naming the mlxspec cells below FLOOR (or none)."""
    shown = [m for m in methods if any(m in cells for cells in table.values())]
    if not shown:
        return ""
    name_w = max(len(m) for m in shown)
    lines = ["per prompt, against mlxspec plain (mean of the repetitions; the lowest one in brackets)"]
    low = []
    for temp in sorted({t for t, _ in table}):
        prompts = [p for t, p in table if t == temp]
        cols = [max(len(p), 11) for p in prompts]
        lines.append(f"T={temp:g}".ljust(name_w) + "  " + "  ".join(p.ljust(w) for p, w in zip(prompts, cols)))
        for m in shown:
            row = []
            for p, w in zip(prompts, cols):
                cell = table[(temp, p)].get(m)
                row.append(("-" if cell is None else f"{cell[0]:.2f} ({cell[1]:.2f})").ljust(w))
                if cell is not None and cell[0] < FLOOR and m.startswith("mlxspec"):
                    low.append(f"{m} on {p} at T={temp:g} ({cell[0]:.2f})")
            lines.append(m.ljust(name_w) + "  " + "  ".join(row))
    lines.append("below %.2fx of plain: %s" % (FLOOR, "; ".join(low) if low else "none"))
    return "\n".join(lines)
