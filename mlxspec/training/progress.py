"""Progress lines of a training run, on stderr."""
from __future__ import annotations

import sys
import time


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bar(step: int, total: int, t0: float, start_step: int, info: str, unit: str = "step") -> None:
    width = 28
    frac = step / max(total, 1)
    done = "#" * int(width * frac) + "-" * (width - int(width * frac))
    rate = (step - start_step) / max(time.perf_counter() - t0, 1e-9)
    eta = (total - step) / rate if rate > 0 else 0
    sys.stderr.write(f"\r[{done}] {step}/{total} {info} {rate:.2f} {unit}/s eta {eta:.0f}s ")
    sys.stderr.flush()
