"""Run the shipped quality check for several verification settings on one loaded engine:
per setting and temperature, accuracy (arithmetic answers, code tests), acceptance,
decode tok/s and what relaxation cost."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from mlxspec import relaxed
from mlxspec.eval import arith, code


@dataclass(frozen=True)
class Setting:
    verify: str = "exact"  # exact | relaxed
    weight: Optional[object] = None  # a number, or a learned relax_head.RelaxHead
    budget: Optional[float] = None

    @property
    def label(self) -> str:
        if self.verify != "relaxed":
            return self.verify
        r = relaxed.Relaxed.checked(self.weight, self.budget)
        if r.head is not None:
            return f"relaxed {r.head.name} b={r.budget:g}"
        return f"relaxed w={r.weight:g} b={r.budget:g}"


def items(n_arith: int, n_code: int, seed: int = 0) -> list[tuple[str, object]]:
    return [("arith", p) for p in arith.problems(n_arith, seed)] + [("code", t) for t in code.tasks(n_code)]


def _score(kind: str, item, text: str) -> bool:
    return arith.correct(item, text) if kind == "arith" else code.passes(item, text)


def run_setting(engine, setting: Setting, temp: float, work, max_tokens: int, seed: int = 0,
                progress=None) -> dict:
    import mlxspec

    relaxed.configure(engine, setting.verify, setting.weight, setting.budget)
    engine._governors.clear()  # what a governor learnt under another setting would bias this one
    weight = getattr(setting.weight, "name", setting.weight)  # a learned head by its name
    row = {"setting": setting.label, "verify": setting.verify, "weight": weight, "budget": setting.budget,
           "temp": temp, "arith": 0, "arith_n": 0, "code": 0, "code_n": 0, "tokens": 0, "seconds": 0.0,
           "drafted": 0, "accepted": 0, "relaxed_tokens": 0, "relax_checked": 0, "over_budget": 0,
           "tv_sum": 0.0, "tv_max": 0.0, "replies": []}
    for i, (kind, item) in enumerate(work):
        last, pieces = None, []
        for r in mlxspec.stream_generate(engine, item.prompt, max_tokens=max_tokens, temp=temp, seed=seed + i):
            pieces.append(r.text)
            last = r
        text = "".join(pieces)
        ok = _score(kind, item, text)
        row[kind] += ok
        row[kind + "_n"] += 1
        s, x = last.stats, last.stats.extra
        row["tokens"] += last.generation_tokens
        row["seconds"] += last.generation_tokens / max(last.generation_tps, 1e-9)
        row["drafted"] += s.drafted
        row["accepted"] += s.accepted
        for k in ("relaxed_tokens", "relax_checked", "over_budget"):
            row[k] += x.get(k, 0)
        row["tv_sum"] += x.get("tv_mean", 0.0) * x.get("relax_checked", 0)
        row["tv_max"] = max(row["tv_max"], x.get("tv_max", 0.0))
        row["replies"].append({"id": item.id, "ok": ok, "tokens": last.generation_tokens, "text": text})
        if progress is not None:
            progress(i + 1)
    return summarise(row)


def summarise(row: dict) -> dict:
    row["accuracy"] = (row["arith"] + row["code"]) / max(1, row["arith_n"] + row["code_n"])
    row["acceptance"] = row["accepted"] / row["drafted"] if row["drafted"] else 0.0
    row["tps"] = row["tokens"] / row["seconds"] if row["seconds"] else 0.0
    row["tv_mean"] = row["tv_sum"] / row["relax_checked"] if row["relax_checked"] else 0.0
    return row


def run(engine, settings: list[Setting], temps: list[float], n_arith: int, n_code: int, max_tokens: int,
        seed: int = 0, progress_factory=None, on_row=None) -> list[dict]:
    """One row per (temperature, setting), in that order; a short warm-up first.
    on_row(rows so far) after each row (the CLI saves them: a long run keeps its rows)."""
    import mlxspec

    work = items(n_arith, n_code, seed)
    mlxspec.generate(engine, "Say hi.", max_tokens=8)  # first-call costs (cost model, kernels)
    rows = []
    for temp in temps:
        for s in settings:
            label = f"eval {s.label} T={temp:g}"
            prog = progress_factory(label, len(work)) if progress_factory else None
            t0 = time.perf_counter()
            row = run_setting(engine, s, temp, work, max_tokens, seed, prog)
            row["wall_s"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            if on_row is not None:
                on_row(rows)
    return rows


def table(rows: list[dict]) -> str:
    """A Markdown table of the rows (the docs' format)."""
    head = ("| T | verify | accuracy | arith | code | acceptance | tok/s | relaxed tokens | mean TV | over budget |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        rel = f"{r['relaxed_tokens']}/{r['relax_checked']}" if r["verify"] == "relaxed" else "-"
        tvm = f"{r['tv_mean']:.3f}" if r["verify"] == "relaxed" else "-"
        ob = str(r["over_budget"]) if r["verify"] == "relaxed" else "-"
        lines.append(f"| {r['temp']:g} | {r['setting']} | {r['accuracy']:.0%} | {r['arith']}/{r['arith_n']} | "
                     f"{r['code']}/{r['code_n']} | {r['acceptance']:.2f} | {r['tps']:.2f} | {rel} | {tvm} | {ob} |")
    return "\n".join(lines)
