"""Placeholder: replaced by the module that implements `mlxspec bench`."""
import click


@click.command("bench")
def bench():
    """Not implemented yet."""
    raise click.ClickException("not implemented yet")
