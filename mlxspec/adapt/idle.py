"""Training an adapting head between replies (issue 15), for any front end that owns an
engine on one thread: the chat (tui/engine_thread.py) and the server (serve/worker.py).

After a reply the thread that owns the engine trains the head while nothing waits, in
slices of at most `slice_s`, at most `budget_s` per reply. Training runs on that thread
itself (the engine is not thread-safe) and stops as soon as work is waiting: the drafter
checks `stop()` before each optimiser step, so new work waits at most one step. After
each slice `emit(info, running)` reports the head's counters.

`Learning(engine)` gives an engine the two members IdleTrainer calls (`adaptation()`,
`idle_update(stop, budget_s)`), the same ones tui/contract.py asks of a chat backend.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

from mlxspec.errors import first_line

DEFAULT_IDLE_S = 30.0  # idle training per reply, so an idle front end does not use the CPU for ever
SLICE_S = 3.0  # between two status updates (each slice that trained ends with a save)

log = logging.getLogger("mlxspec.adapt")

Emit = Callable[[Optional[dict], bool], None]


def learner(engine):
    """The engine's drafter that adapts (a Composite's own drafter, e.g. head+lookup), or None."""
    d = getattr(engine, "drafter", None)
    d = getattr(d, "primary", d)
    return d if getattr(d, "learn", False) and getattr(d, "adapter", None) is not None else None


class Learning:
    """adaptation() and idle_update() of an engine's adapting drafter (nothing when none adapts)."""

    def __init__(self, engine):
        self.engine = engine

    def adaptation(self) -> Optional[dict]:
        d = learner(self.engine)
        return None if d is None else d.status()

    def idle_update(self, stop: Callable[[], bool], budget_s: float) -> dict:
        d = learner(self.engine)
        if d is None:
            return {"steps": 0, "seconds": 0.0}
        return d.idle_update(stop, budget_s)


class IdleTrainer:
    """Owned by the thread that owns the engine; every method runs there. `backend` is
    anything with adaptation() and idle_update(stop, budget_s) (Learning, a chat backend)."""

    def __init__(self, emit: Optional[Emit] = None, slice_s: float = SLICE_S):
        self.emit = emit or (lambda info, running: None)
        self.slice_s = slice_s
        self.left = 0.0  # idle seconds still allowed after the last reply

    def report(self, backend, running: bool = False) -> Optional[dict]:
        try:
            info = backend.adaptation() if backend is not None else None
        except Exception as exc:  # the owning thread must survive a broken counter
            log.warning("head adaptation status unavailable: %s", first_line(exc))
            info = None
        self.emit(info, running and info is not None)
        return info

    def arm(self, backend, budget_s: float) -> None:
        """A reply ended: report its acceptance and allow `budget_s` of idle training."""
        info = self.report(backend, running=budget_s > 0)
        self.left = float(budget_s) if info is not None else 0.0

    def disarm(self) -> None:
        self.left = 0.0

    @property
    def pending(self) -> bool:
        return self.left > 0

    def run_slice(self, backend, stop: Callable[[], bool]) -> dict:
        """Train for one slice (or until stop()), then report; returns {"steps", "seconds"}."""
        try:
            budget = min(self.slice_s, self.left)
            out = backend.idle_update(stop, budget)
            if not out.get("steps") and budget < self.left and not stop():
                out = backend.idle_update(stop, self.left)  # a step longer than a slice: one slice
        except Exception as exc:  # a failing trainer must not take the front end down
            log.warning("idle adaptation stopped: %s", first_line(exc))
            out = {"steps": 0, "seconds": 0.0}
        steps, seconds = int(out.get("steps", 0)), max(float(out.get("seconds", 0.0)), 1e-3)
        self.left -= seconds
        if not steps or self.left < seconds / steps:
            self.left = 0.0  # nothing to train on, or no room for a step: do not spin
        if self.report(backend, running=self.pending and not stop()) is None:
            self.left = 0.0  # the drafter stopped adapting (or its status failed)
        return {"steps": steps, "seconds": seconds}
