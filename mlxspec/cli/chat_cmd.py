"""Placeholder: replaced by the module that implements `mlxspec chat`."""
import click


@click.command("chat")
def chat():
    """Not implemented yet."""
    raise click.ClickException("not implemented yet")
