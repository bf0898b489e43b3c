"""Placeholder: replaced by the module that implements `mlxspec train-head`."""
import click


@click.command("train-head")
def train_head():
    """Not implemented yet."""
    raise click.ClickException("not implemented yet")
