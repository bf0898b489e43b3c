"""A "use session" (issue 15): prompts in three domains, code then legal then medical,
replayed through one engine as a person would use it, adapting between prompts.

Written for this measurement (none come from the benchmark sets). `replay()` runs a
session with one drafter and returns a row per prompt: acceptance, mean accepted
length, tok/s and the seconds spent adapting after the reply.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

CODE = [
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "Write a Python function that checks whether a string is a palindrome, ignoring case.",
    "Write a Python function that counts how many times each word appears in a text.",
    "Write a Python function that reverses a singly linked list.",
    "Write a Python function that merges two sorted lists into one sorted list.",
    "Write a Python function that returns the largest value in a list without using max().",
    "Write a Python function that removes duplicate items from a list but keeps their order.",
    "Write a Python function that converts a temperature from Celsius to Fahrenheit.",
    "Write a Python function that flattens a nested list of lists into one list.",
    "Write a Python function that returns True when a number is prime.",
]
LEGAL = [
    "Explain what a non-disclosure agreement is and what it usually contains.",
    "Explain the difference between a contract and a verbal agreement.",
    "Explain what breach of contract means and what remedies a party may have.",
    "Explain what a tenant's rights are when a landlord does not make repairs.",
    "Explain what a power of attorney is and when someone might need one.",
    "Explain what copyright protects and how long it usually lasts.",
    "Explain what a will is and what happens when someone dies without one.",
    "Explain what liability means in a contract and how a limitation clause works.",
    "Explain what an employment contract usually says about termination and notice.",
    "Explain what a warranty in a sales contract is.",
]
MEDICAL = [
    "Explain what high blood pressure is and how it is usually treated.",
    "Explain the common symptoms of type 2 diabetes and how it is diagnosed.",
    "Explain what causes asthma and how an inhaler helps.",
    "Explain what a fever is and when a patient should see a doctor.",
    "Explain what cholesterol is and why high cholesterol is a risk for the heart.",
    "Explain the common symptoms of a migraine and how it is treated.",
    "Explain what an antibiotic is and why it does not work against viruses.",
    "Explain what anemia is, its symptoms and its usual treatment.",
    "Explain what a stroke is and what its warning signs are.",
    "Explain what an allergy is and how antihistamines help.",
]
DOMAINS = {"code": CODE, "legal": LEGAL, "medical": MEDICAL}


def session(per_domain: Optional[int] = None) -> list[tuple[str, str]]:
    """(domain, prompt) in session order: every code prompt, then legal, then medical."""
    return [(d, p) for d, ps in DOMAINS.items() for p in ps[:per_domain]]


def replay(engine, prompts: list[tuple[str, str]], max_tokens: int = 48,
           on_row: Optional[Callable[[dict], None]] = None) -> list[dict]:
    """Greedy replies to each prompt, in order, through one engine (the drafter adapts in
    its end_reply, inside the reply's stream). Adapting seconds are measured around the
    end of the stream; tok/s counts generation only, not adaptation."""
    import mlxspec

    rows = []
    for i, (domain, text) in enumerate(prompts):
        t0 = time.perf_counter()
        last, t_last, tokens = None, t0, []
        for r in mlxspec.stream_generate(engine, text, max_tokens=max_tokens):
            last, t_last = r, time.perf_counter()
            tokens.append(r.token)
        t_end = time.perf_counter()
        s = last.stats
        d = getattr(engine.drafter, "primary", None) or engine.drafter
        upd = getattr(d, "last_update", None) or {}
        row = {"i": i, "domain": domain, "tokens": len(tokens), "tok_s": round(last.generation_tps, 2),
               "acceptance": round(s.acceptance_rate, 4), "mean_len": round(s.mean_accepted_length, 3),
               "rounds": s.rounds, "drafted": s.drafted, "accepted": s.accepted,
               "adapt_s": round(t_end - t_last, 3), "steps": upd.get("steps", 0) if upd else 0,
               "reply_s": round(t_last - t0, 3), "output": tokens}
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


METHODS = ("plain", "lookup", "frozen", "adapting", "adapting+lookup")


def engines(target, method: str, state_dir, budget: float = 0.10, lr: Optional[float] = None,
            governor: bool = True, head_kw: Optional[dict] = None):
    """An engine for one method of the comparison; heads start from no head (a new head
    from the target's layer, its state under `state_dir`)."""
    from mlxspec.adapt import Adapter, AdaptSettings
    from mlxspec.drafters.adaptive import AdaptiveHeadDrafter
    from mlxspec.engine import Engine
    from mlxspec.loading import with_branches

    drafter = None
    if method == "lookup":
        drafter = with_branches(target, None)
    elif method != "plain":
        settings = AdaptSettings(lr=lr) if lr else None
        head_kw = dict(head_kw or {})
        exit_layer = head_kw.pop("exit_layer", None)
        adapter = Adapter.open(target.model, state_dir, target.tokenizer, exit_layer=exit_layer,
                               new_head_kw=head_kw, settings=settings)
        drafter = AdaptiveHeadDrafter(target.model, adapter, budget_fraction=budget,
                                      learn=method != "frozen", label=f"head:{method.split('+')[0]}")
        if method.endswith("+lookup"):
            drafter = with_branches(target, drafter, store=False)
    return Engine(target.model, target.tokenizer, drafter, model_name=target.name, adaptive=governor,
                  max_context=target.max_context, cost_path=target.path / ".mlxspec-costs.json")


def main(argv=None) -> None:
    """python -m mlxspec.bench.use_session [-m MODEL] [--methods a,b] [--per-domain N]"""
    import argparse
    import json
    import sys
    import tempfile
    from pathlib import Path

    from mlxspec.loading import load_model

    ap = argparse.ArgumentParser(prog="python -m mlxspec.bench.use_session")
    ap.add_argument("-m", "--model", default="smollm2-135m-instruct")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--per-domain", type=int, default=None)
    ap.add_argument("-n", "--max-tokens", type=int, default=48)
    ap.add_argument("--budget", type=float, default=0.10, help="adaptation seconds per reply second")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--json", dest="out", default=None, help="write every row here")
    ap.add_argument("--no-governor", dest="governor", action="store_false",
                    help="draft every round (measures the head's acceptance on every reply)")
    ap.add_argument("--exit-layer", type=int, default=None, help="a new head's exit layer")
    ap.add_argument("--feature-input", action="store_true", default=None, help="a new head reads the target's features")
    ap.add_argument("--init-layer", type=int, default=None, help="the target layer a new head's block copies")
    a = ap.parse_args(argv)
    head_kw = {k: v for k, v in (("exit_layer", a.exit_layer), ("feature_input", a.feature_input),
                                 ("init_layer", a.init_layer)) if v is not None}
    target = load_model(a.model)
    prompts = session(a.per_domain)
    result = {}
    for method in a.methods.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            eng = engines(target, method, Path(tmp), a.budget, a.lr, a.governor, head_kw)
            t0 = time.perf_counter()

            def show(row, method=method):
                print(f"{method:16s} {row['i']:2d} {row['domain']:8s} acc {row['acceptance']:.2f} "
                      f"len {row['mean_len']:.2f} {row['tok_s']:6.2f} tok/s adapt {row['adapt_s']:.2f}s "
                      f"({row['steps']} steps)", file=sys.stderr, flush=True)

            result[method] = replay(eng, prompts, a.max_tokens, show)
            print(f"{method}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    ref = result.get("plain")
    if ref:
        for m, rows in result.items():
            same = all(r["output"] == p["output"] for r, p in zip(rows, ref))
            print(f"{m}: greedy output {'identical to' if same else 'DIFFERS from'} plain", file=sys.stderr)
    if a.out:
        Path(a.out).write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
