"""`mlxspec adapt`: generate replies to the user's own prompts and adapt the draft head on
them (issue 15), and/or let the target read the user's own files (`--texts`, prefill only:
mlxspec/adapt/texts.py). Replies are not printed; progress with an ETA goes to stderr. The head is
saved atomically after every update, so Ctrl-C (or a kill) keeps the last saved state."""
from __future__ import annotations

import sys
import time

import click

from mlxspec.cli.common import check_name, setup_logging
from mlxspec.errors import InvalidParameterError


def _prompts(spec: str) -> dict:
    if spec == "use-session":
        from mlxspec.bench.use_session import session

        return {f"{d}-{i + 1}": [{"role": "user", "content": p}] for i, (d, p) in enumerate(session())}
    from mlxspec.bench.prompts import load_prompts

    return load_prompts(spec)


@click.command("adapt")
@click.option("-m", "--model", default=None, help="Target model (default: smollm2-135m-instruct).")
@click.option("--prompts", "prompt_spec", default=None, metavar="FILE|DIR|use-session",
              help="Your prompts: a folder (one per file), a JSONL file of chats, or a text file of "
              "blank-line-separated prompts; use-session: the built-in code/legal/medical session.")
@click.option("--texts", multiple=True, metavar="FILE|DIR",
              help="Your own files (code, notes, documents; repeatable): the target reads them, no replies "
              "are generated, and the linear head learns from every position. Folders are read recursively.")
@click.option("--text-tokens", type=int, default=50_000, show_default=True,
              help="Most tokens read from --texts.")
@click.option("-n", "--max-tokens", type=int, default=128, show_default=True, help="Most tokens per reply.")
@click.option("--budget", type=float, default=1.0, show_default=True,
              help="Training seconds per second of reply.")
@click.option("--epochs", type=int, default=1, show_default=True, help="Passes over the prompts.")
@click.option("--exit", "train_exit", is_flag=True,
              help="Train the early exit too (replies verified with --verify early-exit; the exit learns "
              "from every forward and is saved under the model's exits/).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def adapt(model, prompt_spec, texts, text_tokens, max_tokens, budget, epochs, train_exit, as_json):
    """Adapt MODEL's draft head on replies to your prompts and/or on your files (starting
    one if it has none)."""
    import json
    import math

    import mlxspec
    from mlxspec.hub.progress import Progress

    setup_logging()
    check_name(model, "model")
    if max_tokens is None or not 1 <= max_tokens <= 100_000:
        raise InvalidParameterError(f"--max-tokens must be in 1..100000, got {max_tokens}")
    if not (math.isfinite(budget) and 0 < budget <= 100):
        raise InvalidParameterError(f"--budget must be in (0, 100], got {budget}")
    if not 1 <= epochs <= 1000:
        raise InvalidParameterError(f"--epochs must be in 1..1000, got {epochs}")
    if prompt_spec is None and not texts:
        raise InvalidParameterError("give --prompts, --texts or both")
    if not 1 <= text_tokens <= 10_000_000:
        raise InvalidParameterError(f"--text-tokens must be in 1..10000000, got {text_tokens}")
    from mlxspec.adapt.texts import text_files

    files = text_files(texts)  # bad paths and prompts fail before the model loads
    chats = _prompts(prompt_spec) if prompt_spec is not None else {}
    engine = mlxspec.load(model, "head", adapt=True, verify="early-exit" if train_exit else "exact")
    from mlxspec.drafters.adaptive import adaptive_part

    head = adaptive_part(engine.drafter)
    if head is None:  # cannot happen with draft="head", adapt=True; say so rather than crash
        raise InvalidParameterError("this model's drafter cannot adapt")
    head.budget_fraction = budget
    a = head.adapter
    start = dict(updates=a.counters.updates, tokens=a.counters.tokens_seen, replies=len(a.counters.acceptance))
    read = _read_files(engine, a, files, text_tokens, train_exit) if files else None
    total = len(chats) * epochs
    bar = Progress("adapting", total, "replies")
    done, t0, interrupted = 0, time.perf_counter(), False
    try:
        for _ in range(epochs):
            for msgs in chats.values():
                for _r in mlxspec.stream_chat(engine, msgs, max_tokens=max_tokens):
                    pass  # the reply's end runs one training slice (the drafter's end_reply)
                done += 1
                bar.update(done)
    except KeyboardInterrupt:
        interrupted = True
    acc = a.counters.acceptance[start["replies"]:]
    third = max(1, len(acc) // 3)
    summary = {"model": engine.model_name, "replies": done, "updates": a.counters.updates - start["updates"],
               "steps": a.trainer.steps, "seconds": round(time.perf_counter() - t0, 1),
               "acceptance_first": round(sum(acc[:third]) / third, 4) if acc else None,
               "acceptance_last": round(sum(acc[-third:]) / third, 4) if acc else None,
               "head": str(a.model_dir / "heads" / "adapted.safetensors"), "interrupted": interrupted}
    if read is not None:
        summary["texts"] = read
    from mlxspec.hierarchy.state import trained_exit

    ex = trained_exit(engine) if train_exit else None
    if ex is not None:
        summary["exit"] = {**ex.summary(), "path": str(engine.exit_path)}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        trend = (f", acceptance {summary['acceptance_first']:.0%} -> {summary['acceptance_last']:.0%}"
                 if acc else "")
        if read is not None:
            click.echo(f"read {read['files']} files, {read['tokens']} tokens in {read['seconds']:.0f} s", err=True)
        click.echo(f"{done} replies, {summary['updates']} updates{trend}; head: {summary['head']}", err=True)
        if "exit" in summary:
            agree = ", ".join(f"layer {m} {a:.0%}" for m, a in summary["exit"]["agreement"].items())
            click.echo(f"trained exit: {summary['exit']['rows']} rows, agreement {agree}; {summary['exit']['path']}",
                       err=True)
    if interrupted:
        click.echo("Interrupted: the head keeps its last saved state.", err=True)
        sys.exit(130)


def _read_files(engine, adapter, files, max_tokens: int, train_exit: bool = False) -> dict:
    from mlxspec.adapt.texts import encode_files, learn_from_texts
    from mlxspec.hub.progress import Progress

    docs = encode_files(engine.tokenizer, files, max_tokens)
    if not docs:
        raise InvalidParameterError("none of the --texts files holds readable text")
    bar = Progress("reading", sum(len(d) for d in docs), "tokens")
    ex = None
    if train_exit:  # the same forwards teach the trained exit
        from mlxspec.hierarchy.state import prepare, reply_ended, trained_exit

        prepare(engine)
        ex = trained_exit(engine)
    out = learn_from_texts(adapter, docs, progress=bar.update, exit=ex)
    if ex is not None:
        reply_ended(engine)  # refit and save it
    return {"files": len(docs), **out}
