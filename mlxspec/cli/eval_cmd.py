"""`mlxspec eval`: the shipped quality check for exact and relaxed verification side by
side (accuracy, acceptance, tok/s, what relaxation cost). Table on stdout, progress on
stderr, --json for machines, -o to keep the full results (every reply)."""
from __future__ import annotations

import json

import click

from mlxspec.cli.common import check_name, check_sampling, model_options, setup_logging


@click.command("eval")
@model_options
@click.option("--verify", "verifies", multiple=True, type=click.Choice(["exact", "relaxed"]),
              help="Setting to evaluate (repeatable; default: exact and relaxed).")
@click.option("--relax-weight", "weights", multiple=True, type=float,
              help="Relaxed rows' draft weight (repeatable: one row per weight and budget).")
@click.option("--relax-budget", "budgets", multiple=True, type=float,
              help="Relaxed rows' total-variation budget (repeatable).")
@click.option("--relaxed", "pairs", multiple=True, metavar="W:B",
              help="A relaxed row with weight W (a number, or 'learned': the pair's train-relax head) and "
              "budget B (repeatable; beside the grid above).")
@click.option("--temp", "temps", multiple=True, type=float, help="Temperature (repeatable; default 0).")
@click.option("--arith", "n_arith", type=click.IntRange(0, 1000), default=50, show_default=True,
              help="Arithmetic word problems.")
@click.option("--code", "n_code", type=click.IntRange(0, 20), default=20, show_default=True,
              help="Python functions with unit tests.")
@click.option("-n", "--max-tokens", type=int, default=128, show_default=True, help="Most tokens per reply.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON (without the replies).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write every row and reply as JSON here.")
def eval_(model, draft, verifies, weights, budgets, pairs, temps, n_arith, n_code, max_tokens, seed, as_json, output):
    """Accuracy, acceptance and speed of exact vs relaxed verification on a small offline eval."""
    import mlxspec
    from mlxspec.atomic import atomic_write_text
    from mlxspec.errors import InvalidParameterError
    from mlxspec.eval.runner import Setting, run, table
    from mlxspec.hub.progress import Progress

    setup_logging()
    check_name(model, "model")
    check_name(draft, "draft")
    temps = list(temps) or [0.0]
    for t in temps:
        check_sampling(max_tokens, t, 1.0, 0, None, seed, None)
    if n_arith + n_code == 0:
        raise InvalidParameterError("nothing to evaluate (--arith 0 --code 0)")
    verifies = list(dict.fromkeys(verifies)) or (["exact"] if pairs else ["exact", "relaxed"])
    if (weights or budgets) and "relaxed" not in verifies:
        raise InvalidParameterError("--relax-weight and --relax-budget need --verify relaxed")
    settings = []
    for v in verifies:
        if v == "exact":
            settings.append(Setting())
        else:
            settings += [Setting("relaxed", w, b) for w in (weights or [None]) for b in (budgets or [None])]
    for pair in pairs:
        try:
            w, b = pair.split(":")
            w, b = (w if w == "learned" else float(w)), float(b)
        except ValueError:
            raise InvalidParameterError(f"--relaxed takes WEIGHT:BUDGET, e.g. 0.5:0.3 or learned:0.5, "
                                        f"got {pair!r}") from None
        if w == "learned":  # the pair's head from mlxspec train-relax
            from mlxspec import relax_head
            from mlxspec.cli.train_relax_cmd import draft_label
            from mlxspec.hub import store
            from mlxspec.loading import DEFAULT_MODEL

            w = relax_head.load(relax_head.relax_path(store.resolve_model(model or DEFAULT_MODEL), draft_label(draft)))
        settings.append(Setting("relaxed", w, b))
    for s in settings:
        s.label  # validates the weight and budget before anything loads
    engine = mlxspec.load(model, draft, adapt=False)
    doc = {"model": engine.model_name, "draft": engine.draft_name, "max_tokens": max_tokens, "seed": seed,
           "rows": []}

    def save(rows):
        if output:
            atomic_write_text(output, json.dumps({**doc, "rows": rows}, indent=1, ensure_ascii=False) + "\n")

    rows = run(engine, settings, temps, n_arith, n_code, max_tokens, seed,
               progress_factory=lambda label, n: Progress(label, n, "replies"), on_row=save)
    doc["rows"] = rows
    if as_json:
        brief = [{k: v for k, v in r.items() if k != "replies"} for r in rows]
        click.echo(json.dumps({**doc, "rows": brief}, ensure_ascii=False))
    else:
        click.echo(f"{engine.model_name}, draft {engine.draft_name}, {n_arith} arithmetic + {n_code} code, "
                   f"at most {max_tokens} tokens each")
        click.echo(table(rows))
