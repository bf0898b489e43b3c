"""Progress with an ETA on stderr for long store work (joining, converting, checking).

On a terminal one line is rewritten in place (at most 4 times a second); into a file or
a pipe a line is written every few seconds and at the end, so logs stay short.
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def human(n: float, unit: str) -> str:
    if unit == "B":
        for scale, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
            if n >= scale:
                return f"{n / scale:.1f} {name}"
        return f"{n:.0f} B"
    return f"{n:.0f} {unit}".rstrip()


def _eta(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    def __init__(self, label: str, total: int, unit: str = "", stream: Optional[TextIO] = None,
                 every_s: Optional[float] = None):
        self.label, self.total, self.unit = label, max(int(total), 0), unit
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = every_s if every_s is not None else (0.25 if self.tty else 5.0)
        self.t0 = time.perf_counter()
        self._last = self.t0  # the first line after every_s: quick work prints only its end
        self.done = 0

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        frac = self.done / self.total if self.total else 1.0
        text = f"{self.label}: {100 * frac:3.0f}% ({human(self.done, self.unit)} of {human(self.total, self.unit)})"
        if self.done >= self.total:
            return f"{text} in {_eta(elapsed)}"
        if self.done > 0 and elapsed > 0.5:
            text += f", ETA {_eta(elapsed * (self.total - self.done) / self.done)}"
        return text

    def update(self, done: int, total: Optional[int] = None) -> None:
        if total is not None:
            self.total = max(int(total), 0)
        self.done = min(int(done), self.total) if self.total else int(done)
        now = time.perf_counter()
        finished = self.done >= self.total
        if self._last == float("inf"):
            return  # the final line is out
        if not finished and now - self._last < self.every_s:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K" + ("\n" if finished else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
        if finished:
            self._last = float("inf")  # the final line once

    def __call__(self, done: int, total: Optional[int] = None) -> None:
        self.update(done, total)
