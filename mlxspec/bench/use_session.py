"""A "use session" (issue 15): prompts in three domains, code then legal then medical,
replayed through one engine per method as a person would use it, adapting between prompts.

Written for this measurement (none come from the benchmark sets). `replay()` runs every
method on each prompt before the next prompt (interleaved, so the machine's drift hits
every method alike) and returns a row per method and prompt: acceptance, mean accepted
length, tok/s, and the seconds (and optimiser steps) spent adapting: the reply's own
budget (end_reply, `budget` x its time) plus, with `think_s`, the time a person spends
reading and typing before the next prompt (the chat's idle training).
"""
from __future__ import annotations

import time
from typing import Callable, Optional

from mlxspec.bench.session_prompts import DOMAINS

METHODS = ("plain", "lookup", "frozen", "adapting", "adapting-static", "adapting+lookup", "draft")
BLOCK = "-block"  # e.g. adapting-block: a new head of the transformer-block kind, trained by SGD
EE = ":ee"  # a method's suffix: the same drafter under early-exit verification with the trained exit
FILES = "@files"  # a method's suffix: its new head first reads --texts (adapt/texts.py)
NARROW = "-narrow"  # e.g. adapting-narrow: the linear head's tree has 2 children at the root, not 4
_EE_KEYS = ("exit_layer", "exit_agreement", "full_verifications", "full_emitted", "tentative_verified",
            "full_accepted", "single_level_rounds")


def session(per_domain: Optional[int] = None) -> list[tuple[str, str]]:
    """(domain, prompt) in session order: every code prompt, then legal, then medical."""
    return [(d, p) for d, ps in DOMAINS.items() for p in ps[:per_domain]]


def _adapting(engine):
    from mlxspec.drafters.adaptive import adaptive_part

    d = adaptive_part(engine.drafter)
    return d if d is not None and d.learn else None


def _one(engine, text: str, max_tokens: int, think_s: float) -> dict:
    import mlxspec

    t0 = time.perf_counter()
    last, t_last, tokens = None, t0, []
    for r in mlxspec.stream_generate(engine, text, max_tokens=max_tokens):
        last, t_last = r, time.perf_counter()
        tokens.append(r.token)
    t_end = time.perf_counter()
    s = last.stats
    head = _adapting(engine)
    upd = dict(head.last_update) if head is not None else {}
    idle = head.idle_update(lambda: False, think_s) if head is not None and think_s > 0 else {}
    return {"tokens": len(tokens), "tok_s": round(last.generation_tps, 2),
            "acceptance": round(s.acceptance_rate, 4), "mean_len": round(s.mean_accepted_length, 3),
            "rounds": s.rounds, "drafted": s.drafted, "accepted": s.accepted,
            "adapt_s": round(t_end - t_last + idle.get("seconds", 0.0), 3),
            "steps": upd.get("steps", 0) + idle.get("steps", 0),
            "reply_s": round(t_last - t0, 3), "output": tokens,
            **{k: s.extra[k] for k in _EE_KEYS if k in s.extra}}


def replay(engines: dict, prompts: list[tuple[str, str]], max_tokens: int = 48, think_s: float = 0.0,
           on_row: Optional[Callable[[str, dict], None]] = None) -> dict:
    """{method: [row per prompt]}: greedy replies, each prompt through every engine in
    turn. tok/s counts generation only, not adaptation."""
    rows: dict = {m: [] for m in engines}
    for i, (domain, text) in enumerate(prompts):
        for method, eng in engines.items():
            row = {"i": i, "domain": domain, **_one(eng, text, max_tokens, think_s)}
            rows[method].append(row)
            if on_row:
                on_row(method, row)
    return rows


def engine_for(target, method: str, state_dir, budget: float = 0.10, lr: Optional[float] = None,
               governor: bool = True, head_kw: Optional[dict] = None, steps: Optional[int] = None,
               docs: Optional[list] = None):
    """An engine for one method of the comparison (None: not available for this target);
    heads start from no head (a new head from the target's own layer, its state under
    `state_dir`). `steps`: exactly that many optimiser steps after each reply, whatever
    the clock says (recipes compared on a busy machine). A method ending in FILES reads
    `docs` (token ids) before the session."""
    from mlxspec.adapt import Adapter, AdaptSettings
    from mlxspec.drafters.adaptive import AdaptiveHeadDrafter
    from mlxspec.engine import Engine
    from mlxspec.loading import _model_drafter, _suggested_draft, with_branches

    drafter = None
    verify = "early-exit" if method.endswith(EE) else "exact"
    method = method[: -len(EE)] if method.endswith(EE) else method
    read = method.endswith(FILES)
    method = method[: -len(FILES)] if read else method
    if method == "lookup":
        drafter = with_branches(target, None)
    elif method == "draft":
        partner = _suggested_draft(target.name)
        if partner is None:
            return None
        drafter = _model_drafter(target, partner)
    elif method != "plain":
        settings = AdaptSettings(lr=lr) if lr else None
        head_kw = dict(head_kw or {})
        if BLOCK in method:  # the transformer-block head trained by SGD (before: the only one)
            head_kw["kind"], method = "block", method.replace(BLOCK, "")
        tree_kw = {"root_width": 2} if NARROW in method else {}
        method = method.replace(NARROW, "")
        exit_layer = head_kw.pop("exit_layer", None)
        adapter = Adapter.open(target.model, state_dir, target.tokenizer, exit_layer=exit_layer,
                               new_head_kw=head_kw, settings=settings)
        if read:
            from mlxspec.adapt.texts import learn_from_texts

            learn_from_texts(adapter, docs or [])
        vocab = "static" if method.endswith("-static") else "dynamic"
        drafter = AdaptiveHeadDrafter(target.model, adapter, vocab_mode=vocab,
                                      budget_fraction=1e6 if steps else budget,
                                      learn=method != "frozen", label=f"head:{method.split('+')[0]}", **tree_kw)
        drafter.max_steps = steps
        if method.endswith("+lookup"):
            drafter = with_branches(target, drafter, store=False)
    return Engine(target.model, target.tokenizer, drafter, model_name=target.name, adaptive=governor,
                  max_context=target.max_context, cost_path=target.path / ".mlxspec-costs.json", verify=verify)


def summary(rows: dict) -> dict:
    """Per method: acceptance and tok/s over each domain's second half, tok/s over the
    session's last third against plain's on the same prompts, and whether greedy output
    equals plain's."""
    out = {}
    ref = rows.get("plain")
    for m, rs in rows.items():
        per = {}
        for d in dict.fromkeys(r["domain"] for r in rs):
            mine = [r for r in rs if r["domain"] == d]
            half = mine[len(mine) // 2:]
            per[d] = {"acceptance": round(sum(r["accepted"] for r in half) / max(1, sum(r["drafted"] for r in half)), 4),
                      "tok_s": round(sum(r["tok_s"] for r in half) / len(half), 2)}
            if any("exit_layer" in r for r in half):  # early-exit: the trained exit's measured agreement
                full = sum(r.get("full_verifications", 0) for r in half)
                per[d].update(exit_agreement=half[-1].get("exit_agreement"), exit_layer=half[-1].get("exit_layer"),
                              full_verifications=full, tokens_per_full=round(
                                  sum(r.get("full_emitted", 0) for r in half) / full, 3) if full else None)
        item = {"second_half": per}
        if ref:
            third = len(rs) - len(rs) // 3
            item["last_third_vs_plain"] = round(sum(r["tok_s"] for r in rs[third:])
                                                / max(1e-9, sum(r["tok_s"] for r in ref[third:])), 3)
            item["greedy_equals_plain"] = all(r["output"] == p["output"] for r, p in zip(rs, ref))
        out[m] = item
    return out


def main(argv=None) -> None:
    """python -m mlxspec.bench.use_session [-m MODEL] [--methods a,b] [--per-domain N]"""
    import argparse
    import json
    import shutil
    import sys
    import tempfile
    from pathlib import Path

    from mlxspec.errors import MlxspecError, first_line
    from mlxspec.loading import load_model

    ap = argparse.ArgumentParser(prog="python -m mlxspec.bench.use_session")
    ap.add_argument("-m", "--model", default="smollm2-135m-instruct")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--per-domain", type=int, default=None)
    ap.add_argument("-n", "--max-tokens", type=int, default=48)
    ap.add_argument("--budget", type=float, default=0.10, help="adaptation seconds per reply second")
    ap.add_argument("--think", type=float, default=0.0, help="idle training seconds after each reply (chat)")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None, help="exactly this many training steps per reply")
    ap.add_argument("--json", dest="out", default=None, help="write every row here")
    ap.add_argument("--no-governor", dest="governor", action="store_false",
                    help="draft every round (measures the head's acceptance on every reply)")
    ap.add_argument("--exit-layer", type=int, default=None, help="a new head's exit layer")
    ap.add_argument("--feature-input", action="store_true", default=None, help="a new head reads the target's features")
    ap.add_argument("--init-layer", type=int, default=None, help="the target layer a new head's block copies")
    ap.add_argument("--texts", nargs="*", default=(), help=f"files or folders the {FILES} methods' heads read first")
    ap.add_argument("--text-tokens", type=int, default=50_000)
    a = ap.parse_args(argv)
    head_kw = {k: v for k, v in (("exit_layer", a.exit_layer), ("feature_input", a.feature_input),
                                 ("init_layer", a.init_layer)) if v is not None}
    try:
        target = load_model(a.model)
    except MlxspecError as exc:  # an unknown or missing model: one line, no traceback
        sys.exit(f"error: {first_line(exc)}")
    docs = None
    if a.texts:
        from mlxspec.adapt.texts import encode_files, text_files

        try:
            docs = encode_files(target.tokenizer, text_files(a.texts), a.text_tokens)
        except MlxspecError as exc:
            sys.exit(f"error: {first_line(exc)}")
    with tempfile.TemporaryDirectory() as tmp:
        engines, read_dir = {}, None
        for m in a.methods.split(","):
            t_read = time.perf_counter()
            if m.endswith(FILES) and read_dir is not None:  # the same files read once: start from that state
                shutil.copytree(read_dir, Path(tmp) / m)
            eng = engine_for(target, m, Path(tmp) / m, a.budget, a.lr, a.governor, head_kw, a.steps,
                             docs if read_dir is None else None)
            if m.endswith(FILES) and read_dir is None:
                read_dir = Path(tmp) / m
                print(f"{m}: read {sum(map(len, docs or []))} tokens in {time.perf_counter() - t_read:.1f} s",
                      file=sys.stderr)
            if eng is None:
                print(f"{m}: not available for {target.name}", file=sys.stderr)
            else:
                engines[m] = eng

        def show(method, row):
            ee = (f" exit@{row['exit_layer']} agree {row.get('exit_agreement', 0):.2f} "
                  f"full {row.get('full_verifications', 0)} single {row.get('single_level_rounds', 0)}"
                  if "exit_layer" in row else "")
            print(f"{method:16s} {row['i']:2d} {row['domain']:8s} acc {row['acceptance']:.2f} "
                  f"len {row['mean_len']:.2f} {row['tok_s']:6.2f} tok/s adapt {row['adapt_s']:.2f}s "
                  f"({row['steps']} steps){ee}", file=sys.stderr, flush=True)

        t0 = time.perf_counter()
        rows = replay(engines, session(a.per_domain), a.max_tokens, a.think, show)
        memory = {}
        for m, eng in engines.items():
            from mlxspec.drafters.adaptive import adaptive_part

            d = adaptive_part(eng.drafter)
            if d is not None:
                memory[m] = d.adapter.memory_bytes() if d.learn else {"head": int(d.head.nbytes())}
    result = {"rows": rows, "summary": summary(rows), "memory_bytes": memory,
              "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps({"summary": result["summary"], "memory_bytes": memory}, indent=1), file=sys.stderr)
    if a.out:
        Path(a.out).write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
