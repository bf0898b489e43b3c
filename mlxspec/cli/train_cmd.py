"""`mlxspec train-head`: distil a compact early-layer draft head from a target model."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click


def _load_target(spec: str):
    """(name, model_dir, model, tokenizer) through the shared loader."""
    from mlxspec.loading import load_model

    t = load_model(spec)
    return t.name, Path(t.path), t.model, t.tokenizer


@click.command("train-head")
@click.option("-m", "--model", "model_spec", default=None, help="Target model (registry name or folder). Default: the default model.")
@click.option("--corpus", multiple=True, metavar="FILES|DIR",
              help="Training text (repeatable). Default: the offline recipe (Python stdlib sources + local licence/doc texts).")
@click.option("--exit-layer", type=int, default=None, help="Layers the draft runs before the head (default ~1/4 of depth).")
@click.option("--vocab", type=int, default=None, help="Core vocabulary size (default: 4k-32k by vocab size).")
@click.option("--vocab-mode", type=click.Choice(["dynamic", "static", "full"]), default="dynamic", show_default=True,
              help="Draft vocabulary used at generation time.")
@click.option("--steps", type=int, default=300, show_default=True)
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--seq-len", type=int, default=128, show_default=True)
@click.option("--lr", type=float, default=5e-4, show_default=True)
@click.option("--ffn-ratio", type=float, default=1.0, show_default=True, help="Head MLP width relative to a target layer.")
@click.option("--feature-input/--no-feature-input", default=False, show_default=True,
              help="EAGLE-style head: also feed it the target's last final hidden state.")
@click.option("--eval-windows", type=int, default=32, show_default=True,
              help="Held-out windows for the acceptance estimate (not trained on).")
@click.option("--init-from", default=None, metavar="NAME|FILE",
              help="Start from a trained head (name under models/<model>/heads/ or a file) and fine-tune it.")
@click.option("--features", default=None, metavar="DIR", type=click.Path(file_okay=False),
              help="Train on replies the model generated with its states kept (python -m mlxspec.cli.selfgen_cmd) instead of a corpus.")
@click.option("--unroll", type=int, default=2, show_default=True,
              help="Feature-input heads: passes on their own predicted features per step (1 = teacher features only).")
@click.option("--corpus-tokens", type=int, default=150_000, show_default=True, help="Corpus tokens (teacher features are computed once for them).")
@click.option("--name", default="default", show_default=True, help="Head file name under models/<model>/heads/.")
@click.option("--time-budget", type=float, default=None, metavar="MINUTES",
              help="Stop (checkpointed, resumable) after this many minutes.")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue from a matching checkpoint.")
@click.option("--seed", type=int, default=0, show_default=True)
def train_head(model_spec, corpus, exit_layer, vocab, vocab_mode, steps, batch, seq_len, lr, ffn_ratio,
               feature_input, eval_windows, init_from, features, unroll, corpus_tokens, name, time_budget, resume,
               seed):
    """Train a draft head for MODEL (teacher-forced distillation from the model itself).

    Writes models/<model>/heads/<name>.safetensors and <name>.json atomically; progress
    goes to stderr; interrupted runs resume from their checkpoint."""
    from mlxspec.errors import InvalidParameterError

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise InvalidParameterError(f"head name {name!r} must be letters, digits, '.', '_' or '-'")
    for label, v in (("steps", steps), ("batch", batch), ("seq-len", seq_len), ("corpus-tokens", corpus_tokens),
                     ("eval-windows", eval_windows)):
        if v <= 0:
            raise InvalidParameterError(f"{label} must be positive, got {v}")
    if vocab is not None and vocab <= 0:
        raise InvalidParameterError(f"vocab must be positive, got {vocab}")
    if not lr > 0:
        raise InvalidParameterError(f"learning rate must be positive, got {lr}")
    if not 0 < ffn_ratio <= 4:
        raise InvalidParameterError(f"ffn-ratio must be in (0, 4], got {ffn_ratio}")
    if time_budget is not None and time_budget <= 0:
        raise InvalidParameterError("time budget must be positive")
    if not 1 <= unroll <= 4:
        raise InvalidParameterError(f"unroll must be in 1..4, got {unroll}")
    if features and corpus:
        raise InvalidParameterError("give either --corpus or --features, not both")
    if features and not Path(features).is_dir():
        raise InvalidParameterError(f"--features: no folder {features}")
    if corpus:
        from mlxspec.textfiles import expand_paths

        expand_paths(corpus)  # fail early on a missing path

    from mlxspec.training.train import TrainSettings, train

    mname, model_dir, model, tokenizer = _load_target(model_spec)
    from mlxspec.runtime.layered import LayeredModel

    n_layers = LayeredModel(model).num_layers
    if exit_layer is not None and not 1 <= exit_layer < n_layers:
        raise InvalidParameterError(f"exit layer must be in 1..{n_layers - 1} for {mname}, got {exit_layer}")
    init_path = None
    if init_from:
        from mlxspec.head.io import heads_dir

        cand = Path(init_from)
        init_path = cand if cand.suffix == ".safetensors" else heads_dir(model_dir) / f"{init_from}.safetensors"
        if not init_path.is_file():
            raise InvalidParameterError(f"--init-from: no head file {init_path}")
        init_path = str(init_path.resolve())
    settings = TrainSettings(
        exit_layer=exit_layer, vocab=vocab, steps=steps, batch=batch, seq_len=seq_len, lr=lr,
        ffn_ratio=ffn_ratio, feature_input=feature_input, init_from=init_path, corpus=[str(Path(c).resolve()) for c in corpus],
        corpus_tokens=corpus_tokens, seed=seed, vocab_mode=vocab_mode, eval_windows=eval_windows,
        unroll=unroll, features=str(Path(features).resolve()) if features else None,
    )
    click.echo(f"training head '{name}' for {mname}: exit layer {settings.exit_layer or 'auto'}, "
               f"{steps} steps of {batch}x{seq_len} tokens", err=True)
    stepped = []  # once steps run, train() itself says where Ctrl-C stopped it
    try:
        res = train(model, tokenizer, model_dir, settings, name=name, resume=resume,
                    time_budget_s=time_budget * 60 if time_budget else None,
                    on_step=lambda step, loss: stepped or stepped.append(step))
    except KeyboardInterrupt:
        if not stepped:
            click.echo("\ninterrupted; what was computed is checkpointed, run again to resume", err=True)
        sys.exit(130)  # the head files are written atomically: an older head is intact
    if res is None:
        sys.exit(3)  # stopped by the time budget; checkpoint kept
    click.echo(f"wrote {res.path}", err=True)
    click.echo(json.dumps({"path": str(res.path), **res.settings["acceptance"],
                           "head_params": res.settings["head_params"]}))
