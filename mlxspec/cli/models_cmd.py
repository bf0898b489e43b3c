"""`mlxspec models`: list, pull and remove models in the local store."""
from __future__ import annotations

import shutil

import click


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


@click.group("models")
def models():
    """Manage the local model store (models/)."""


@models.command("pull")
@click.argument("name")
@click.option("--force", is_flag=True, help="Re-install even if present (trained heads are kept).")
def pull_cmd(name, force):
    """Install registry model NAME into the store."""
    from mlxspec.hub.pull import pull

    pull(name, force=force)


@models.command("list")
def list_cmd():
    """Installed models with sizes, then known models not installed."""
    from mlxspec.hub.registry import load_registry
    from mlxspec.hub.store import list_installed, models_dir

    installed = list_installed()
    click.echo(f"Model store: {models_dir()}")
    for m in installed:
        heads = f"  heads: {', '.join(m.heads)}" if m.heads else ""
        click.echo(f"  {m.name:<32} {m.arch:<8} {_size(m.size_bytes):>9}{heads}")
    if not installed:
        click.echo("  (nothing installed)")
    names = {m.name for m in installed}
    rest = [e for n, e in sorted(load_registry().items()) if n not in names]
    if rest:
        click.echo("Known, not installed (mlxspec models pull NAME):")
        for e in rest:
            click.echo(f"  {e.name:<32} {e.description}")


@models.command("rm")
@click.argument("name")
def rm_cmd(name):
    """Remove an installed model (and its trained heads)."""
    from mlxspec.errors import ModelNotFoundError
    from mlxspec.hub.store import models_dir

    path = models_dir() / name
    if not (path / "config.json").exists():
        raise ModelNotFoundError(f"model '{name}' is not installed")
    shutil.rmtree(path)
    click.echo(f"Removed {path}", err=True)
