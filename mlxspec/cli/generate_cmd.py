"""`mlxspec generate`: one-shot generation. Text on stdout, stats on stderr."""
from __future__ import annotations

import json
import sys

import click

from mlxspec.cli.common import (REPLACED_WARNING, PrefillProgress, check_name, check_sampling,
                                check_verify, decode_arg, model_options, read_stdin,
                                sampling_options, setup_logging, verify_options)
from mlxspec.errors import InvalidParameterError


def _read_prompt(prompt: str | None) -> tuple[str, bool]:
    """(prompt, replaced): from argv or stdin, always valid Unicode."""
    if prompt is None or prompt == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise InvalidParameterError("no prompt given (pass it as an argument or on stdin)")
        prompt, replaced = read_stdin()
    else:
        prompt, replaced = decode_arg(prompt)
    if not prompt.strip():
        raise InvalidParameterError("the prompt is empty")
    return prompt, replaced


def format_stats(last, engine, no_drafter: bool = False) -> str:
    s = last.stats
    parts = [
        f"{last.generation_tokens} tokens",
        f"{last.generation_tps:.2f} tok/s",
        f"prompt {last.prompt_tokens} tok @ {last.prompt_tps:.1f} tok/s",
        f"draft {s.method}" + (" (--num-draft 0: no drafter loaded)" if no_drafter else ""),
    ]
    if s.rounds:
        parts += [f"{s.accepted} of {s.drafted} drafted tokens accepted ({s.acceptance_rate:.0%})",
                  f"{s.rounds} rounds", f"mean accepted length {s.mean_accepted_length:.2f}"]
    elif s.method != "plain":
        parts.append("no drafts this reply (speculation would not pay here)")
    if s.draft_vocab:
        parts.append(f"draft vocab {s.draft_vocab}")
    if s.verify == "relaxed":
        x = s.extra
        parts.append(f"relaxed: {x.get('relaxed_tokens', 0)} of {x.get('relax_checked', 0)} verified tokens "
                     f"departed from the target, mean TV {x.get('tv_mean', 0.0):.3f}, "
                     f"{x.get('over_budget', 0)} verified exactly (over budget)")
    parts.append(f"peak memory {last.peak_memory:.2f} GB")
    return "[" + ", ".join(parts) + "]"


@click.command("generate")
@click.argument("prompt", required=False)
@model_options
@sampling_options
@click.option("--stop", multiple=True, help="Stop string (repeatable).")
@click.option("--chat/--no-chat-template", "chat_template", default=True, show_default=True,
              help="Wrap the prompt in the model's chat template.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document: text, tokens, stats.")
@click.option("--stats", "show_stats", is_flag=True, help="Print generation stats to stderr.")
@click.option("--adapt/--no-adapt", "adapt", default=None,
              help="The draft head learns from this reply (default: on when a head drafts; "
              "--draft head without a head starts one).")
@verify_options
def generate(prompt, model, draft, max_tokens, temp, top_p, top_k, repetition_penalty, seed,
             num_draft, stop, chat_template, as_json, show_stats, adapt, verify, relax_weight,
             relax_budget):
    """Generate a completion for PROMPT (or stdin)."""
    import mlxspec

    setup_logging()
    check_sampling(max_tokens, temp, top_p, top_k, repetition_penalty, seed, num_draft)  # before loading
    check_name(model, "model")
    check_name(draft, "draft")
    verify_kw = check_verify(verify, relax_weight, relax_budget)
    prompt, replaced = _read_prompt(prompt)
    stop = [decode_arg(x) for x in stop]
    if replaced or any(r for _, r in stop):
        click.echo(REPLACED_WARNING, err=True)
    stop = [x for x, _ in stop]
    no_drafter = num_draft == 0 and draft != "none"
    if no_drafter:
        draft = "none"  # plain decoding: loading a drafter would only cost time and memory
    engine = mlxspec.load(model, draft, adapt=adapt, **verify_kw)
    stream = mlxspec.stream_generate(
        engine, prompt, max_tokens=max_tokens, temp=temp, top_p=top_p, top_k=top_k,
        repetition_penalty=repetition_penalty, seed=seed, num_draft=num_draft, stop=stop,
        chat_template=chat_template, on_prefill=PrefillProgress(),
    )
    tokens, pieces, last = [], [], None
    finish = None
    try:
        for r in stream:
            tokens.append(r.token)
            pieces.append(r.text)
            last = r
            if not as_json and r.text:
                sys.stdout.write(r.text)
                sys.stdout.flush()
        finish = last.finish_reason if last else None
    except KeyboardInterrupt:
        stream.close()
        finish = "interrupted"
    if as_json:
        doc = {
            "model": engine.model_name,
            "draft": engine.draft_name,
            "text": "".join(pieces),
            "tokens": tokens,
            "finish_reason": finish,
            "prompt_tokens": last.prompt_tokens if last else 0,
            "generation_tokens": len(tokens),
            "generation_tps": last.generation_tps if last else 0.0,
            "prompt_tps": last.prompt_tps if last else 0.0,
            "peak_memory_gb": last.peak_memory if last else 0.0,
            "stats": last.stats.as_dict() if last else {},
        }
        click.echo(json.dumps(doc, ensure_ascii=False))
    else:
        sys.stdout.write("\n")
        sys.stdout.flush()
    if show_stats and last is not None:
        click.echo(format_stats(last, engine, no_drafter), err=True)
    if finish == "interrupted":
        click.echo("Interrupted.", err=True)
        sys.exit(130)
