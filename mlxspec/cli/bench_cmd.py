"""`mlxspec bench`: table on stdout, progress on stderr, --json/--csv to files."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
import time

import click

from mlxspec.cli.common import setup_logging


def _atomic_write(path: str, text: str) -> None:
    from mlxspec.atomic import atomic_write_text

    atomic_write_text(path, text)


def _eta(done: int, total: int, elapsed: float) -> str:
    if not done:
        return "ETA ?"
    minutes, seconds = divmod(round(elapsed / done * (total - done)), 60)
    return f"ETA {minutes}m{seconds:02d}s" if minutes else f"ETA {seconds}s"


def _csv(rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    fields = [f.name for f in dataclasses.fields(rows[0].__class__)] if rows else []
    w.writerow(fields)
    for r in rows:
        w.writerow([getattr(r, f) for f in fields])
    return buf.getvalue()


def build_methods(target, draft_spec, num_draft, top_p, only, relaxed_pairs=(), early_exit=False):
    from mlxspec import loading
    from mlxspec.bench.runner import mlx_lm_method, mlxspec_method
    from mlxspec.drafters.draft_model import ModelDrafter
    from mlxspec.engine import Engine

    def engine(drafter, name, **kw):
        return Engine(target.model, target.tokenizer, drafter, model_name=target.name,
                      draft_name=name, max_context=target.max_context, num_draft=num_draft, **kw)

    methods = [
        mlx_lm_method("mlx-lm plain", target.model, target.tokenizer, top_p=top_p),
        mlxspec_method("mlxspec plain", engine(None, "none"), top_p),
    ]
    if draft_spec is None:
        draft_spec = loading._suggested_draft(target.name)
    if draft_spec and draft_spec != "none":
        draft = loading.load_model(draft_spec)
        loading.check_tokenizers(target, draft)
        methods.append(mlx_lm_method(f"mlx-lm spec ({draft.name}, k={num_draft})", target.model,
                                     target.tokenizer, draft.model, num_draft, top_p))
        drafter = ModelDrafter(draft.model, target.vocab_size, label=f"draft:{draft.name}")
        methods.append(mlxspec_method(f"mlxspec draft ({draft.name})", engine(drafter, drafter.name), top_p))
        both = loading.with_branches(target, drafter)
        methods.append(mlxspec_method(f"mlxspec draft+lookup ({draft.name})", engine(both, both.name), top_p))
        for w, b in relaxed_pairs:  # a drafter of its own: relaxed engines ask it for q rows
            d = ModelDrafter(draft.model, target.vocab_size, label=f"draft:{draft.name}")
            methods.append(mlxspec_method(f"mlxspec draft relaxed w={w:g} b={b:g} ({draft.name})",
                                          engine(d, d.name, verify="relaxed", relax_weight=w, relax_budget=b),
                                          top_p))
        if early_exit:  # drafters of their own (the middle level drafts chains)
            d = ModelDrafter(draft.model, target.vocab_size, label=f"draft:{draft.name}")
            methods.append(mlxspec_method(f"mlxspec draft early-exit ({draft.name})",
                                          engine(d, d.name, verify="early-exit"), top_p))
    lookup = loading.with_branches(target, None)
    methods.append(mlxspec_method("mlxspec lookup", engine(lookup, lookup.name), top_p))
    if early_exit:
        lookup = loading.with_branches(target, None)
        methods.append(mlxspec_method("mlxspec lookup early-exit", engine(lookup, lookup.name, verify="early-exit"),
                                      top_p))
        for name, drafter in _head_drafters(target).items():
            if name == "head dynamic-vocab":
                methods.append(mlxspec_method(f"mlxspec {name} early-exit",
                                              engine(drafter, name, verify="early-exit"), top_p))
    for name, drafter in _head_drafters(target).items():
        methods.append(mlxspec_method(f"mlxspec {name}", engine(drafter, name), top_p))
    if only:
        wanted = [w.strip() for w in only.split(",")]
        methods = [m for m in methods if m.name in ("mlx-lm plain", "mlxspec plain")
                   or any(w in m.name for w in wanted)]
    return methods


def _head_drafters(target) -> dict:
    """The trained head with each vocabulary mode (full / static / dynamic), if one exists."""
    from mlxspec import loading
    from mlxspec.drafters import head

    if not head.find_heads(target.path):
        return {}
    return loading.bench_variants(target)


@click.command("bench")
@click.option("-m", "--model", default=None, help="Target model (default: smollm2-135m-instruct).")
@click.option("--draft", default=None, help="Draft model for the separate-draft methods "
              "(default: the registry's partner; 'none' to skip).")
@click.option("--methods", "only", default=None, help="Comma list of method-name substrings to run "
              "(the plain baselines always run).")
@click.option("--prompts", "prompt_set", default="default", show_default=True, metavar="SET|FILE|DIR",
              help="A prompt set (default, topic-switch, code-edit) or your own prompts: a folder with one "
              "file per prompt (its name is the label), a text file with one prompt per "
              "blank-line-separated block, or a .jsonl file of chats ({\"messages\": [...]} or a "
              "list of messages per line).")
@click.option("-n", "--max-tokens", type=int, default=64, show_default=True)
@click.option("--reps", type=int, default=2, show_default=True, help="Measured repetitions per prompt.")
@click.option("--warmup/--no-warmup", default=True, show_default=True)
@click.option("--temps", default="0,0.7", show_default=True, help="Comma list of temperatures.")
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--num-draft", type=int, default=4, show_default=True)
@click.option("--relaxed", "relaxed_pairs", multiple=True, metavar="W:B",
              help="Also the draft model with relaxed verification at weight W and budget B (repeatable).")
@click.option("--early-exit", is_flag=True, help="Also the draft model, lookup and the head with early-exit "
              "verification (lossless).")
@click.option("--overhead", is_flag=True, help="The engine's own overhead instead: random-weight models of "
              "real shapes (--shapes, --dtypes), mlxspec against mlx-lm plain and with the target as its own "
              "draft, the cost curve, host bytes per token (mlxspec/bench/overhead.py).")
@click.option("--shapes", default="smollm2,qwen1.5b", show_default=True, help="With --overhead: comma list of "
              "shapes (smollm2: SmolLM2-135M, qwen1.5b: Qwen2.5-1.5B).")
@click.option("--dtypes", default="bfloat16,float32", show_default=True,
              help="With --overhead: comma list of dtypes (float32, bfloat16, float16).")
@click.option("--json", "json_path", default=None, help="Write every run and the table as JSON here.")
@click.option("--csv", "csv_path", default=None, help="Write the table as CSV here.")
def bench(model, draft, only, prompt_set, max_tokens, reps, warmup, temps, top_p, num_draft, relaxed_pairs,
          early_exit, overhead, shapes, dtypes, json_path, csv_path):
    """Benchmark mlxspec's methods against plain decoding and mlx-lm, in one run."""
    if overhead:
        return _overhead(shapes, dtypes, max_tokens, reps, json_path)
    from mlxspec import loading
    from mlxspec.bench import per_prompt
    from mlxspec.bench.prompts import load_prompts
    from mlxspec.bench.runner import format_table, run_once, summarize
    from mlxspec.cli.doctor_cmd import machine_info, measure_gflops
    from mlxspec.errors import InvalidParameterError
    from mlxspec.prompting import encode_chat
    from mlxspec.relaxed import Relaxed

    setup_logging()
    try:
        temp_list = [float(t) for t in temps.split(",") if t.strip()]
    except ValueError:
        raise InvalidParameterError(f"--temps must be a comma list of numbers, got {temps!r}") from None
    if not temp_list or any(t < 0 for t in temp_list):
        raise InvalidParameterError("--temps needs temperatures >= 0")
    if max_tokens < 2 or reps < 1:
        raise InvalidParameterError("bench needs --max-tokens >= 2 and --reps >= 1")
    pairs = []
    for pair in relaxed_pairs:
        try:
            w, b = (float(x) for x in pair.split(":"))
        except ValueError:
            raise InvalidParameterError(f"--relaxed takes WEIGHT:BUDGET, e.g. 0.5:0.3, got {pair!r}") from None
        Relaxed.checked(w, b)
        pairs.append((w, b))
    chats = load_prompts(prompt_set)  # a bad prompts file fails before the model loads
    target = loading.load_model(model)
    methods = build_methods(target, draft, num_draft, top_p, only, pairs, early_exit)
    prompts = {name: encode_chat(target.tokenizer, msgs) for name, msgs in chats.items()}
    eos = set(target.tokenizer.eos_token_ids)

    def progress(msg):
        click.echo(msg, err=True)

    if warmup:
        first = next(iter(prompts.values()))
        for m in methods:
            progress(f"warm-up: {m.name}")
            run_once(m, first, "warmup", temp_list[0], min(16, max_tokens), 0)
    # Results are written only after the last run (atomically): Ctrl-C keeps the old files.
    runs = []
    total = len(temp_list) * reps * len(prompts) * len(methods)
    t0 = time.perf_counter()
    for temp in temp_list:
        for rep in range(reps):
            for i, (pname, ptoks) in enumerate(prompts.items()):
                for m in methods:
                    progress(f"[{len(runs) + 1}/{total} {_eta(len(runs), total, time.perf_counter() - t0)}] "
                             f"{m.name} · prompt {pname} · temp {temp:g} · rep {rep + 1}/{reps}")
                    run = run_once(m, ptoks, pname, temp, max_tokens, seed=1000 * rep + i)
                    runs.append(run)
                    progress(f"  {run.tps:.2f} tok/s, {len(run.tokens)} tokens")
    rows = summarize(runs, methods, baseline="mlx-lm plain", reference="mlxspec plain", eos=eos)
    info = machine_info()
    info["matmul_gflops_f32_1024"] = round(measure_gflops(), 1)
    header = (f"model {target.name}, prompts {prompt_set} ({', '.join(prompts)}), {max_tokens} tokens, "
              f"{reps} reps, top-p {top_p}, device {info['device']}, BLAS {info['blas']} "
              f"({info['matmul_gflops_f32_1024']} GFLOP/s)")
    click.echo(header)
    click.echo(format_table(rows, "mlx-lm plain"))
    by_prompt = per_prompt.ratios(runs)
    if len(prompts) > 1 or reps > 1:
        click.echo(per_prompt.format_ratios(by_prompt, [m.name for m in methods]))
    if json_path:
        doc = {"header": header, "machine": info, "settings": dict(
            model=target.name, prompts=prompt_set, prompt_names=list(prompts), max_tokens=max_tokens,
            reps=reps, temps=temp_list, top_p=top_p, num_draft=num_draft),
            "rows": [dataclasses.asdict(r) for r in rows], "runs": [dataclasses.asdict(r) for r in runs],
            "per_prompt": [dict(temp=t, prompt=p, method=m, mean=c[0], lowest=c[1])
                           for (t, p), cells in by_prompt.items() for m, c in cells.items()]}
        _atomic_write(json_path, json.dumps(doc, indent=1))
    if csv_path:
        _atomic_write(csv_path, _csv(rows))
    if any(r.exact is False for r in rows):
        click.echo("warning: a greedy method's output differed from plain decoding", err=True)
        sys.exit(2)


def _overhead(shapes: str, dtypes: str, max_tokens: int, reps: int, json_path) -> None:
    from mlxspec.bench import overhead
    from mlxspec.errors import InvalidParameterError

    setup_logging()
    names = [x.strip() for x in shapes.split(",") if x.strip()]
    kinds = [x.strip() for x in dtypes.split(",") if x.strip()]
    bad = [x for x in names if x not in overhead.SHAPES] + [x for x in kinds if x not in overhead.DTYPES]
    if bad or not names or not kinds:
        raise InvalidParameterError(f"--overhead: unknown shape or dtype {', '.join(bad) or '(none given)'} "
                                    f"(shapes: {', '.join(overhead.SHAPES)}; dtypes: {', '.join(overhead.DTYPES)})")
    if max_tokens < 2 or reps < 1:
        raise InvalidParameterError("bench needs --max-tokens >= 2 and --reps >= 1")
    results = overhead.run(names, kinds, max_tokens, reps, progress=lambda msg: click.echo(msg, err=True))
    click.echo(overhead.format_table(results))
    if json_path:
        _atomic_write(json_path, json.dumps({"overhead": overhead.as_json(results)}, indent=1))
