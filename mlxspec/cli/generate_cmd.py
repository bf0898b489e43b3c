"""Placeholder: replaced by the module that implements `mlxspec generate`."""
import click


@click.command("generate")
def generate():
    """Not implemented yet."""
    raise click.ClickException("not implemented yet")
