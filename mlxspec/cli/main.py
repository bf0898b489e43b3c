"""`mlxspec` command group. Subcommands live one per module in mlxspec/cli/."""
from __future__ import annotations

import os
import sys

import click

import mlxspec  # noqa: F401  (loads OpenBLAS before anything imports mlx.core)
from mlxspec.errors import MlxspecError


class _Group(click.Group):
    """Turns MlxspecError and Ctrl-C into one line and a non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MlxspecError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("\nInterrupted.", err=True)
            sys.exit(130)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (MemoryError, RuntimeError, OSError, ValueError) as exc:
            # Failures inside MLX or the file system: one line; MLXSPEC_DEBUG=1 for the trace.
            if os.environ.get("MLXSPEC_DEBUG"):
                raise
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None


@click.group(cls=_Group)
@click.version_option(mlxspec.__version__, prog_name="mlxspec")
def cli():
    """Fast local LLM inference on MLX with lossless speculative decoding."""


def _register():
    from mlxspec.cli import (
        bench_cmd,
        chat_cmd,
        doctor_cmd,
        generate_cmd,
        models_cmd,
        train_cmd,
    )

    cli.add_command(generate_cmd.generate)
    cli.add_command(models_cmd.models)
    cli.add_command(bench_cmd.bench)
    cli.add_command(doctor_cmd.doctor)
    cli.add_command(chat_cmd.chat)
    cli.add_command(train_cmd.train_head)


_register()


def main():
    cli(prog_name="mlxspec")
