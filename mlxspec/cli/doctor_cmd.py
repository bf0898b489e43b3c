"""Placeholder: replaced by the module that implements `mlxspec doctor`."""
import click


@click.command("doctor")
def doctor():
    """Not implemented yet."""
    raise click.ClickException("not implemented yet")
