"""Options and helpers shared by the generating commands (generate, chat, bench)."""
from __future__ import annotations

import logging
import os
import sys
import time

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


def verify_options(f):
    """--verify and the relaxed mode's --relax-weight / --relax-budget (mlxspec/relaxed.py)."""
    for opt in reversed([
        click.option("--verify", "verify", type=click.Choice(["exact", "relaxed", "early-exit"]),
                     default="exact", show_default=True,
                     help="exact: lossless (the target's own output). relaxed: verify against a blend "
                     "of draft and target (more drafts kept, bounded and reported divergence)."),
        click.option("--relax-weight", type=float, default=None,
                     help="Relaxed: the draft's weight w in [0, 1) of the blend (0 = exact; default 0.5)."),
        click.option("--relax-budget", type=float, default=None,
                     help="Relaxed: most total-variation distance from the target per position; "
                     "beyond it the position is verified exactly (0 = exact; default 0.3)."),
    ]):
        f = opt(f)
    return f


def check_verify(verify: str, relax_weight, relax_budget) -> dict:
    """The mlxspec.load keywords of the verify options, checked before loading."""
    from mlxspec.errors import InvalidParameterError
    from mlxspec.relaxed import Relaxed

    if verify != "relaxed":
        if relax_weight is not None or relax_budget is not None:
            raise InvalidParameterError("--relax-weight and --relax-budget need --verify relaxed")
        return {"verify": verify}
    Relaxed.checked(relax_weight, relax_budget)
    return {"verify": verify, "relax_weight": relax_weight, "relax_budget": relax_budget}


# -- input text ---------------------------------------------------------------------
REPLACED_WARNING = "warning: input is not valid UTF-8; undecodable bytes were replaced with U+FFFD"


def decode_arg(text: str) -> tuple[str, bool]:
    """(text, replaced): argv arrives surrogate-escaped when it is not UTF-8 (and a
    tokenizer rejects surrogates), so turn it back into bytes and decode with replacement."""
    if not any("\ud800" <= c <= "\udfff" for c in text):
        return text, False
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace"), True


def read_stdin() -> tuple[str, bool]:
    """(text, replaced): stdin read as bytes and decoded as UTF-8 with replacement."""
    buf = getattr(sys.stdin, "buffer", None)
    if buf is None:
        return decode_arg(sys.stdin.read())
    raw = buf.read()
    try:
        return raw.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8-sig", "replace"), True


# -- sampling options, checked before anything is loaded ----------------------------
NAME_MAX = 4096  # PATH_MAX: a longer model name is junk


def check_sampling(max_tokens, temp, top_p, top_k, repetition_penalty, seed, num_draft) -> None:
    """Raise InvalidParameterError (one line) for a value the engine would reject later,
    or reject with a worse message (NaN, inf, a negative seed): call_checks.check_options."""
    from mlxspec.call_checks import check_options

    check_options(max_tokens, temp, top_p, top_k, repetition_penalty, seed, num_draft)


# -- prefill progress -----------------------------------------------------------------
class PrefillProgress:
    """`on_prefill(done, total)` for the engine: tokens done / total, rate and ETA on
    stderr, shown only for a long prompt or once prefill has taken more than `after_s`."""

    def __init__(self, stream=None, long_prompt: int = 1024, after_s: float = 1.5, every_s: float = 0.25):
        self.stream = stream or sys.stderr
        self.long_prompt, self.after_s = long_prompt, after_s
        self.every_s = every_s if self._tty() else 5.0  # a log file gets a line now and then
        self.t0 = time.perf_counter()
        self.shown = False
        self._last = 0.0

    def _tty(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):
            return False

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        elapsed = now - self.t0
        if not self.shown and total < self.long_prompt and elapsed < self.after_s:
            return
        final = done >= total
        if not final and self.shown and now - self._last < self.every_s:
            return
        self._last, self.shown = now, True
        rate = done / elapsed if elapsed > 0 else 0.0
        line = f"prefill {done}/{total} tokens · {rate:.0f} tok/s"
        if not final and rate > 0:
            line += f" · ETA {(total - done) / rate:.0f} s"
        if self._tty():
            self.stream.write("\r\033[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def check_name(value, label: str) -> None:
    """A model or drafter name with control characters (junk, or a pasted newline) is
    refused here, so that no later message quoting it spans several lines."""
    from mlxspec.errors import InvalidParameterError

    if value is None:
        return
    if not value.strip():
        raise InvalidParameterError(f"{label} name is empty")  # not a silent default
    if len(value) > NAME_MAX:
        raise InvalidParameterError(f"{label} name is {len(value)} characters long (at most {NAME_MAX})")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidParameterError(f"{label} contains a control character: {value!r}")
