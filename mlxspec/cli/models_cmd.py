"""`mlxspec models`: list, pull and remove models in the local store."""
from __future__ import annotations

import click


def _size(n: int) -> str:
    from mlxspec.hub.progress import human

    return human(n, "B")


@click.group("models")
def models():
    """Manage the local model store (models/)."""


@models.command("pull")
@click.argument("name")
@click.option("--force", is_flag=True, help="Re-install even if present (trained heads and the reply store are kept).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "q8", "q4"]), default=None,
              help="Weight format (default float32, the CPU's fast dtype); q8/q4 are mlx-lm quantized "
                   "(group size 64). Installs as NAME, NAME-bf16, NAME-q8 or NAME-q4.")
def pull_cmd(name, force, dtype):
    """Install registry model NAME into the store."""
    from mlxspec.hub.pull import pull

    pull(name, force=force, dtype=dtype)


@models.command("list")
def list_cmd():
    """Installed models with sizes, trained heads and reply stores, then known models."""
    from mlxspec.hub.pull import say_cleaned
    from mlxspec.hub.registry import load_registry, split_format
    from mlxspec.hub.store import clean_stale_pulls, list_installed, models_dir

    say_cleaned(*clean_stale_pulls())
    installed = list_installed()
    click.echo(f"Model store: {models_dir()}")
    for m in installed:
        click.echo(f"  {m.name:<36} {m.arch:<8} {m.fmt:<8} {_size(m.size_bytes):>9}")
        for head, size in m.heads:
            click.echo(f"      head {head:<31} {_size(size):>9}")
        if m.reply_store is not None:
            click.echo(f"      {'reply store':<36} {_size(m.reply_store):>9}")
    if not installed:
        click.echo("  (nothing installed)")
    names = {(split_format(m.name) or (m.name,))[0] for m in installed}
    rest = [e for n, e in sorted(load_registry().items()) if n not in names]
    if rest:
        click.echo("Known, not installed (mlxspec models pull NAME [--dtype q4]):")
        for e in rest:
            click.echo(f"  {e.name:<36} {e.description}")


@models.command("rm")
@click.argument("name")
def rm_cmd(name):
    """Remove an installed model (and its trained heads): a name from `models list`."""
    from mlxspec.hub.store import remove_model

    path = remove_model(name)
    click.echo(f"Removed {path}", err=True)
