"""`mlxspec train-relax`: fit the learned relax weight of a draft/target pair on locally
generated, checked arithmetic problems (training/relax.py); saved atomically under the
target's folder (relax/<draft>.safetensors + .json). Progress with ETA on stderr."""
from __future__ import annotations

import json
from pathlib import Path

import click

from mlxspec.cli.common import check_name, setup_logging


def draft_label(draft: str) -> str:
    """The name a pair's relax head is saved under: the draft's folder or registry name."""
    return Path(draft).name if Path(draft).exists() else draft


@click.command("train-relax")
@click.option("-m", "--model", default=None, help="Target model (default: smollm2-135m-instruct).")
@click.option("--draft", required=True, help="Draft model (registry name or folder) the weight is for.")
@click.option("--problems", type=click.IntRange(1, 5000), default=40, show_default=True,
              help="Generated arithmetic problems to learn from (seeds apart from mlxspec eval's).")
@click.option("-n", "--max-tokens", type=click.IntRange(2, 4096), default=96, show_default=True)
@click.option("--lam", type=click.FloatRange(0, 100), default=1.0, show_default=True,
              help="Weight of the acceptance term against the reward term.")
@click.option("--w-max", type=click.FloatRange(0, 0.99), default=0.9, show_default=True,
              help="Largest weight the head may give the draft.")
@click.option("--steps", type=click.IntRange(1, 100000), default=500, show_default=True)
@click.option("--seed", type=int, default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def train_relax(model, draft, problems, max_tokens, lam, w_max, steps, seed, as_json):
    """Learn when to trust the draft: a per-position relax weight for --verify relaxed."""
    from mlxspec import loading
    from mlxspec.engine import Engine
    from mlxspec.eval import arith
    from mlxspec.hub.progress import Progress
    from mlxspec.relax_head import relax_path, save
    from mlxspec.training.relax import collect, fit

    setup_logging()
    check_name(model, "model")
    check_name(draft, "draft")
    target = loading.load_model(model)
    d = loading.load_model(draft)
    loading.check_tokenizers(target, d)
    from mlxspec.drafters.draft_model import ModelDrafter

    engine = Engine(target.model, target.tokenizer, ModelDrafter(d.model, target.vocab_size),
                    model_name=target.name, max_context=target.max_context)
    probs = arith.problems(problems, seed=seed)
    feats, table, rewards = collect(engine, d.model, probs, max_tokens, w_max, lam,
                                    Progress("train-relax: replies", len(probs), "replies"))
    head, summary = fit(feats, table, w_max, steps=steps)
    path = relax_path(target.path, draft_label(draft))
    info = {"target": target.name, "draft": draft_label(draft), "problems": problems, "seed": seed,
            "correct": int(sum(rewards)), "max_tokens": max_tokens, "lam": lam, "w_max": w_max,
            "steps": steps, **summary}
    save(path, head, info)
    if as_json:
        click.echo(json.dumps({**info, "path": str(path)}))
    else:
        click.echo(f"saved {path}: {int(sum(rewards))}/{problems} replies right, {summary['positions']} positions, "
                   f"mean weight {summary['mean_weight']:.2f} (best static {summary['best_static_weight']:.2f}), "
                   f"objective {summary['objective']:.3f} vs static {summary['best_static_objective']:.3f}")
