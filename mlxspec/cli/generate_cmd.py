"""`mlxspec generate`: one-shot generation. Text on stdout, stats on stderr."""
from __future__ import annotations

import json
import sys

import click

from mlxspec.cli.common import model_options, sampling_options, setup_logging
from mlxspec.errors import InvalidParameterError


def _read_prompt(prompt: str | None) -> str:
    if prompt is None or prompt == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise InvalidParameterError("no prompt given (pass it as an argument or on stdin)")
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise InvalidParameterError("the prompt is empty")
    return prompt


def format_stats(last, engine) -> str:
    s = last.stats
    parts = [
        f"{last.generation_tokens} tokens",
        f"{last.generation_tps:.2f} tok/s",
        f"prompt {last.prompt_tokens} tok @ {last.prompt_tps:.1f} tok/s",
        f"draft {s.method}",
    ]
    if s.rounds:
        parts += [f"acceptance {s.acceptance_rate:.0%}", f"mean accepted length {s.mean_accepted_length:.2f}"]
    if s.draft_vocab:
        parts.append(f"draft vocab {s.draft_vocab}")
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
def generate(prompt, model, draft, max_tokens, temp, top_p, top_k, repetition_penalty, seed,
             num_draft, stop, chat_template, as_json, show_stats):
    """Generate a completion for PROMPT (or stdin)."""
    import mlxspec
    from mlxspec.sampling import SamplingParams

    setup_logging()
    prompt = _read_prompt(prompt)
    SamplingParams(temp, top_p, top_k, repetition_penalty).validated()  # fail before loading
    if max_tokens <= 0:
        raise InvalidParameterError(f"max tokens must be positive, got {max_tokens}")
    engine = mlxspec.load(model, draft)
    stream = mlxspec.stream_generate(
        engine, prompt, max_tokens=max_tokens, temp=temp, top_p=top_p, top_k=top_k,
        repetition_penalty=repetition_penalty, seed=seed, num_draft=num_draft, stop=stop,
        chat_template=chat_template,
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
        click.echo(format_stats(last, engine), err=True)
    if finish == "interrupted":
        click.echo("Interrupted.", err=True)
        sys.exit(130)
