"""`mlxspec` command group. Subcommands live one per module in mlxspec/cli/."""
from __future__ import annotations

import os
import sys

import click

import mlxspec  # noqa: F401  (loads OpenBLAS before anything imports mlx.core)
from mlxspec.errors import MlxspecError, first_line


def printable(text: str) -> str:
    """Undecodable argv bytes (surrogates) shown as escapes instead of failing to print."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


class LineError(click.ClickException):
    """Prints `Error: <message>` and nothing else (no usage block)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(printable(message))
        self.exit_code = exit_code


def _usage_line(exc: click.UsageError) -> LineError:
    # Click's usage block is three lines; one is the rule here. The message may quote a
    # junk argument with newlines in it: keep it on one line.
    where = exc.ctx.command_path if exc.ctx is not None else "mlxspec"
    return LineError(" ".join(f"{exc.format_message()} (see: {where} --help)".split()), exc.exit_code)


def _quiet_broken_pipe() -> None:
    # The reader went away (`| head`): point stdout at devnull so the flush at exit
    # cannot fail again, and exit as a process killed by SIGPIPE would (128 + 13).
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (Click's test runner)
    sys.exit(141)


class _Group(click.Group):
    """Turns MlxspecError, Click's usage errors, Ctrl-C (130) and a closed pipe (141)
    into one line (or none) and a non-zero exit."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise _usage_line(exc) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MlxspecError as exc:
            raise LineError(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("\nInterrupted.", err=True)
            sys.exit(130)
        except BrokenPipeError:
            _quiet_broken_pipe()
        except click.UsageError as exc:
            raise _usage_line(exc) from None
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (MemoryError, RuntimeError, OSError, ValueError) as exc:
            # Failures inside MLX or the file system: one line; MLXSPEC_DEBUG=1 for the trace.
            if os.environ.get("MLXSPEC_DEBUG"):
                raise
            raise LineError(f"{type(exc).__name__}: {first_line(exc)}") from None


@click.group(cls=_Group)
@click.version_option(mlxspec.__version__, prog_name="mlxspec")
def cli():
    """Fast local LLM inference on MLX with lossless speculative decoding."""


def _register():
    from mlxspec.cli import (
        adapt_cmd,
        bench_cmd,
        chat_cmd,
        doctor_cmd,
        eval_cmd,
        generate_cmd,
        head_cmd,
        models_cmd,
        serve_cmd,
        train_cmd,
        train_relax_cmd,
    )

    cli.add_command(generate_cmd.generate)
    cli.add_command(models_cmd.models)
    cli.add_command(bench_cmd.bench)
    cli.add_command(doctor_cmd.doctor)
    cli.add_command(chat_cmd.chat)
    cli.add_command(train_cmd.train_head)
    cli.add_command(head_cmd.head)
    cli.add_command(adapt_cmd.adapt)
    cli.add_command(eval_cmd.eval_)
    cli.add_command(train_relax_cmd.train_relax)
    cli.add_command(serve_cmd.serve)


_register()


def main():
    try:
        cli(prog_name="mlxspec")
    except Exception as exc:
        # A bug, not bad input: still one line for the user. Kept out of the group so that
        # tests running the CLI in-process see the exception itself.
        if os.environ.get("MLXSPEC_DEBUG"):
            raise
        click.echo(printable(f"Error: internal error: {type(exc).__name__}: {first_line(exc)} "
                             "(MLXSPEC_DEBUG=1 shows the traceback)"), err=True)
        sys.exit(1)
