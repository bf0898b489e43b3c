"""Head-drafter measurements: acceptance and speed of full / static / dynamic vocabularies
against plain decoding (and optionally a separate draft model), greedy and sampled.

    python -m mlxspec.head.bench -m MODEL [--head PATH] [--draft MODEL] [-n 64]
        [--prompts default|topic-switch] [--temps 0,0.7] [--modes full,static,dynamic]

Prints one row per method and temperature (tok/s, speedup vs plain, acceptance, mean
accepted length, draft vocab, greedy == plain) and, with --json, writes them to a file.
Used for docs/head.md; `mlxspec bench` covers the head drafter through the loader.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import click


def _prompt_sets(name: str) -> dict:
    from mlxspec.bench_prompts import SETS

    if name == "all":
        out = {}
        for s in SETS.values():
            out.update(s)
        return out
    return SETS[name]


def run_method(engine, prompts: dict, temp: float, n: int, seeds: int = 1) -> dict:
    from mlxspec.sampling import SamplingParams

    res = {"tps": [], "tokens": {}, "drafted": 0, "accepted": 0, "rounds": 0, "vocab": None}
    for name, msgs in prompts.items():
        ids = engine.encode_chat(msgs)
        for seed in range(seeds):
            engine.reset()
            t0 = None
            out = []
            last = None
            for r in engine.stream(ids, SamplingParams(temp=temp), max_tokens=n, seed=seed):
                if t0 is None:
                    t0 = time.perf_counter()  # after prefill + first token, like mlxspec bench
                out.append(r.token)
                last = r
            dt = time.perf_counter() - t0
            res["tps"].append((len(out) - 1) / dt if dt > 0 else 0.0)
            res["tokens"][(name, seed)] = out
            s = last.stats
            res["drafted"] += s.drafted
            res["accepted"] += s.accepted
            res["rounds"] += s.rounds
            res["vocab"] = s.draft_vocab
    return res


@click.command()
@click.option("-m", "--model", "model_spec", required=True)
@click.option("--head", "head_path", default=None, help="Head file (default: newest under models/<model>/heads).")
@click.option("--draft", "draft_spec", default=None, help="Also measure this separate draft model.")
@click.option("-n", "--max-tokens", type=int, default=64)
@click.option("--prompts", default="default")
@click.option("--temps", default="0,0.7")
@click.option("--modes", default="full,static,dynamic")
@click.option("--num-draft", type=int, default=4)
@click.option("--seeds", type=int, default=1)
@click.option("--json", "json_out", default=None, type=click.Path())
def main(model_spec, head_path, draft_spec, max_tokens, prompts, temps, modes, num_draft, seeds, json_out):
    import mlxspec  # noqa: F401
    from mlxspec.drafters.head import load_head_drafter
    from mlxspec.engine import Engine
    from mlxspec.loading import load_model

    target = load_model(model_spec)
    ps = _prompt_sets(prompts)
    temps_l = [float(t) for t in temps.split(",")]
    methods = [("plain", None)]
    for mode in [m for m in modes.split(",") if m]:
        d = load_head_drafter(target.model, target.tokenizer, target.path,
                              Path(head_path) if head_path else None, vocab_mode=mode)
        methods.append((f"head-{mode}", d))
    if draft_spec:
        from mlxspec.loading import _model_drafter

        methods.append((f"draft:{draft_spec}", _model_drafter(target, draft_spec)))
    rows = []
    for temp in temps_l:
        base = None
        ref_tokens = None
        for name, drafter in methods:
            eng = Engine(target.model, target.tokenizer, drafter, model_name=target.name,
                         draft_name=name, num_draft=num_draft, max_context=target.max_context)
            run_method(eng, {k: ps[k] for k in list(ps)[:1]}, temp, 8)  # warm-up
            r = run_method(eng, ps, temp, max_tokens, seeds)
            tps = statistics.mean(r["tps"])
            sd = statistics.pstdev(r["tps"]) if len(r["tps"]) > 1 else 0.0
            if name == "plain":
                base, ref_tokens = tps, r["tokens"]
            same = (r["tokens"] == ref_tokens) if temp == 0 else None
            row = {
                "method": name, "temp": temp, "tps": round(tps, 3), "tps_sd": round(sd, 3),
                "speedup": round(tps / base, 3) if base else None,
                "acceptance": round(r["accepted"] / r["drafted"], 3) if r["drafted"] else None,
                "mean_len": round((r["accepted"] + r["rounds"]) / r["rounds"], 3) if r["rounds"] else None,
                "draft_vocab": r["vocab"], "greedy_equal": same,
                "draft_mb": round(drafter.memory_bytes() / 1e6, 1) if drafter else 0,
            }
            rows.append(row)
            click.echo(
                f"{name:28s} t={temp:<4g} {tps:7.2f} ± {sd:5.2f} tok/s  x{row['speedup'] or 0:.2f}  "
                f"acc {row['acceptance'] if row['acceptance'] is not None else '-'}  "
                f"len {row['mean_len'] if row['mean_len'] is not None else '-'}  vocab {row['draft_vocab']}  "
                f"draft {row['draft_mb']} MB  same={same}"
            )
            sys.stdout.flush()
    if json_out:
        Path(json_out).write_text(json.dumps({"model": target.name, "prompts": prompts,
                                              "max_tokens": max_tokens, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
