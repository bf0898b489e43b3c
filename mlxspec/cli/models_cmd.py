"""Placeholder: replaced by the module that implements `mlxspec models`."""
import click


@click.command("models")
def models():
    """Not implemented yet."""
    raise click.ClickException("not implemented yet")
