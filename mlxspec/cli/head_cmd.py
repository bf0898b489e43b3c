"""`mlxspec head info|reset`: a model's draft heads and its online adaptation state."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click


def _model_dir(spec: Optional[str]) -> Path:
    """An installed registry model or a model folder; never a hub download (these
    commands only look at files already here)."""
    from mlxspec.errors import ModelNotFoundError
    from mlxspec.hub.registry import split_format
    from mlxspec.hub.store import resolve_model

    if spec is None:
        from mlxspec.loading import DEFAULT_MODEL

        spec = DEFAULT_MODEL
    if not str(spec).strip():
        raise ModelNotFoundError("the model name is empty")
    if split_format(spec) is not None:
        path = resolve_model(spec)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise ModelNotFoundError(f"unknown model '{spec}': not an installed model or a folder (see: mlxspec models list)")
        if not path.is_dir():
            raise ModelNotFoundError(f"'{spec}' is a file, not a model folder")
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"'{spec}' is not a model folder (no config.json in {path})")
    return path


def _size(n: int) -> str:
    from mlxspec.hub.progress import human

    return human(n, "B")


@click.group("head")
def head():
    """Draft heads of a model and their online adaptation."""


@head.command("info")
@click.option("-m", "--model", "model_spec", default=None, help="Model: registry name or folder (default: the default model).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def info_cmd(model_spec, as_json):
    """The model's heads with sizes, and what adaptation has done (tokens seen, updates,
    per-reply acceptance, oldest first)."""
    from mlxspec.adapt.state import info
    from mlxspec.hierarchy import exit_store

    path = _model_dir(model_spec)
    out = {"model": path.name, **info(path), "exit": exit_store.info(path)}
    if as_json:
        click.echo(json.dumps(out, sort_keys=True))
        return
    click.echo(f"model {out['model']} ({out['model_dir']})")
    if not out["heads"]:
        click.echo("  no draft heads")
    for h in out["heads"]:
        click.echo(f"  head {h['name']:<24} {_size(h['bytes']):>9}" + ("  (adapted)" if h["adapted"] else ""))
    _exit_line(out["exit"])
    if "error" in out:
        click.echo(f"warning: {out['error']}", err=True)
    if not out["adapted"]:
        click.echo("  adaptation: none yet")
        return
    acc = out["acceptance"]
    trend = ""
    if acc:
        half = max(1, len(acc) // 2)
        trend = (f", acceptance last {acc[-1]:.2f}, first half {sum(acc[:half]) / half:.2f}, "
                 f"second half {sum(acc[half:]) / max(1, len(acc) - half):.2f}" if len(acc) > 1 else
                 f", acceptance {acc[-1]:.2f}")
    kind = out.get("kind", "block")
    steps = f"{out['steps']} refits" if kind == "linear" else f"{out['steps']} steps"
    read = f" (and {out['text_tokens']} of files read)" if out.get("text_tokens") else ""
    click.echo(f"  adaptation ({kind} head): {out['tokens_seen']} tokens seen{read}, {out['updates']} updates, {steps}, "
               f"{len(acc)} replies{trend}; state {_size(out['state_bytes'])}"
               + (f"; started from head {out['base']}" if out["base"] else ""))


def _exit_line(ex) -> None:
    if ex is None:
        click.echo("  trained exit: none yet (it learns under --verify early-exit)")
        return
    if "error" in ex:
        click.echo(f"warning: {ex['error']}", err=True)
    agree = ", ".join(f"layer {m} {a:.0%}" for m, a in sorted(ex.get("agreement", {}).items(), key=lambda x: int(x[0])))
    click.echo(f"  trained exit {_size(ex['bytes']):>9}  {ex.get('rows', 0)} rows, {ex.get('fits', 0)} fits"
               + (f"; agreement with the target: {agree}" if agree else ""))


@head.command("reset")
@click.option("-m", "--model", "model_spec", default=None, help="Model: registry name or folder (default: the default model).")
def reset_cmd(model_spec):
    """Remove the adapted head, its adaptation state and the trained exit (trained heads stay)."""
    from mlxspec.adapt.state import reset
    from mlxspec.atomic import discard_dir
    from mlxspec.hierarchy.exit_store import exit_path

    path = _model_dir(model_spec)
    exits = exit_path(path).parent
    if exits.is_dir() and not exits.is_symlink():
        discard_dir(exits)
        click.echo(f"removed the trained exit of {path.name} ({exits})")
    removed = reset(path)
    if removed:
        click.echo(f"removed the adapted head of {path.name} and its state ({len(removed)} entries under {path / 'heads'})")
    else:
        click.echo(f"{path.name} has no adapted head; nothing removed")
