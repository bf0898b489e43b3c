"""Options and helpers shared by the generating commands (generate, chat, bench)."""
from __future__ import annotations

import logging
import sys

import click


def setup_logging() -> None:
    log = logging.getLogger("mlxspec")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.WARNING)
        log.propagate = False


def model_options(f):
    f = click.option(
        "--draft",
        default="auto",
        show_default=True,
        help="Drafter: auto (the registry's draft partner if installed, else a trained head), none, head, "
        "or a draft model (registry name, folder or hub id).",
    )(f)
    f = click.option(
        "-m", "--model", default=None, help="Target model: registry name, folder or hub id "
        "(default: smollm2-135m-instruct)."
    )(f)
    return f


def sampling_options(f):
    for opt in reversed(
        [
            click.option("-n", "--max-tokens", type=int, default=256, show_default=True),
            click.option("--temp", type=float, default=0.0, show_default=True, help="0 = greedy."),
            click.option("--top-p", type=float, default=1.0, show_default=True),
            click.option("--top-k", type=int, default=0, show_default=True, help="0 = off."),
            click.option("--repetition-penalty", type=float, default=None),
            click.option("--seed", type=int, default=None),
            click.option("--num-draft", type=int, default=None, help="Initial draft length (adapts)."),
        ]
    ):
        f = opt(f)
    return f
