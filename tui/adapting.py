"""The chat's view of idle-time head adaptation (issue 15): the status-bar text and the
message the engine thread posts. The training itself (IdleTrainer: slices on the engine
thread between replies, stopped by the next prompt) lives in mlxspec/adapt/idle.py.
"""
from __future__ import annotations

from typing import Callable, Optional

from textual.message import Message

from mlxspec import DEFAULT_IDLE_S, IdleTrainer  # noqa: F401 (the chat's names)

Emit = Callable[[Optional[dict], bool], None]  # (the head's counters, idle training running)

TREND = 8  # per-reply acceptance rates shown
SPARK = "▁▂▃▄▅▆▇█"
ADAPTING = "adapting…"


class AdaptUpdate(Message):
    """From the engine thread: the head's counters (`info`, None when nothing adapts) and
    whether idle training is running now."""

    def __init__(self, info: Optional[dict], running: bool):
        super().__init__()
        self.info, self.running = info, running


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
