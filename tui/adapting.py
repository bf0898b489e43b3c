"""Idle-time adaptation of the draft head in chat (issue 15), and its status-bar text.

After a reply the engine thread trains the head while the person reads and types, in
slices of at most `slice_s`, at most `budget_s` per reply. Training runs on the engine
thread itself (the engine is not thread-safe) and stops as soon as a job is waiting:
the backend checks `stop()` before each optimiser step, so a new prompt waits at most
one step. After each slice the worker posts an `AdaptUpdate` to the app.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

from textual.message import Message

from mlxspec.errors import first_line

DEFAULT_IDLE_S = 30.0  # idle training per reply, so an idle chat does not use the CPU for ever
SLICE_S = 3.0  # between two status updates (each slice that trained ends with a save)
TREND = 8  # per-reply acceptance rates shown
SPARK = "▁▂▃▄▅▆▇█"
ADAPTING = "adapting…"

log = logging.getLogger("mlxspec.tui")


class AdaptUpdate(Message):
    """From the engine thread: the head's counters (`info`, None when nothing adapts) and
    whether idle training is running now."""

    def __init__(self, info: Optional[dict], running: bool):
        super().__init__()
        self.info, self.running = info, running


Emit = Callable[[Optional[dict], bool], None]


class IdleTrainer:
    """Owned by the engine thread; every method runs there."""

    def __init__(self, emit: Optional[Emit] = None, slice_s: float = SLICE_S):
        self.emit = emit or (lambda info, running: None)
        self.slice_s = slice_s
        self.left = 0.0  # idle seconds still allowed after the last reply

    def report(self, backend, running: bool = False) -> Optional[dict]:
        try:
            info = backend.adaptation() if backend is not None else None
        except Exception as exc:  # the engine thread must survive a broken counter
            log.warning("head adaptation status unavailable: %s", first_line(exc))
            info = None
        self.emit(info, running and info is not None)
        return info

    def arm(self, backend, budget_s: float) -> None:
        """A reply ended: show its acceptance and allow `budget_s` of idle training."""
        info = self.report(backend, running=budget_s > 0)
        self.left = float(budget_s) if info is not None else 0.0

    def disarm(self) -> None:
        self.left = 0.0

    @property
    def pending(self) -> bool:
        return self.left > 0

    def run_slice(self, backend, stop: Callable[[], bool]) -> None:
        """Train for one slice (or until stop()), then report."""
        try:
            budget = min(self.slice_s, self.left)
            out = backend.idle_update(stop, budget)
            if not out.get("steps") and budget < self.left and not stop():
                out = backend.idle_update(stop, self.left)  # a step longer than a slice: one slice
        except Exception as exc:  # a failing trainer must not take the chat down
            log.warning("idle adaptation stopped: %s", first_line(exc))
            out = {"steps": 0, "seconds": 0.0}
        steps, seconds = int(out.get("steps", 0)), max(float(out.get("seconds", 0.0)), 1e-3)
        self.left -= seconds
        if not steps or self.left < seconds / steps:
            self.left = 0.0  # nothing to train on, or no room for a step: do not spin
        if self.report(backend, running=self.pending and not stop()) is None:
            self.left = 0.0  # the drafter stopped adapting (or its status failed)


def sparkline(values: list) -> str:
    """Acceptance rates in [0, 1] as blocks on an absolute scale (so a flat line at 5%
    does not look like a high one)."""
    top = len(SPARK) - 1
    return "".join(SPARK[min(top, max(0, round(float(v) * top)))] for v in values)


def trend_text(info: Optional[dict], running: bool) -> tuple[str, str]:
    """(state word, trend) for the status bar: "adapting…" while idle training runs,
    and the last per-reply acceptance rates, e.g. "head acc ▁▂▄ 12%→19%"."""
    if info is None:
        return "", ""
    acc = list(info.get("acceptance") or [])[-TREND:]
    if not acc:
        trend = "head adapts"
    elif len(acc) == 1:
        trend = f"head acc {acc[0]:.0%}"
    else:
        trend = f"head acc {sparkline(acc)} {acc[0]:.0%}→{acc[-1]:.0%}"
    return (ADAPTING if running else ""), trend
