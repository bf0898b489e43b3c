"""The cost of a target forward of n tokens relative to one token, measured on the
machine it runs on and cached per model, backend and dtype.

On a CPU with a fast BLAS a forward of a few tokens costs little more than one (the
weights are read once); with quantized matmuls on a CPU n tokens cost n times one; on
a GPU the curve is flat far longer. The governor sizes drafts from this curve.

The curve need not rise with n: a BLAS's matrix kernels work in blocks of rows, and a
forward whose row count fills its blocks can cost less than a shorter one (measured in
docs/benchmarks.md). Every size up to MAX_SIZE is measured, and a runner that can pad a
verification forward with rows nobody reads (runtime/target.py) pays the cheapest size
at or above the rows it needs: `padded_size`, and `effective()`, the curve it then pays.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

MAX_SIZE = 16
SIZES = tuple(range(1, MAX_SIZE + 1))
REPEATS = 2
# Cached curves of an older way of measuring are measured again (version 1 timed each
# size once: a busy moment could stay in the cache; version 2 measured 2, 4, 8 and 12
# only and interpolated between them, hiding which sizes are cheap).
MEASURED_BY = "v3"
_PAD_NOISE = 1.03  # sizes that cost within this of each other are equal
_NODE_WORTH = 0.05  # what one more tree node adds to a round's tokens, roughly: a runner-up or a copy


class CostModel:
    def __init__(self, ratios: dict[int, float]):
        pts = sorted((int(n), float(r)) for n, r in ratios.items())
        if not pts or pts[0][0] != 1:
            raise ValueError("a cost model needs the cost of one token")
        self.points = [(1, 1.0)] + [(n, max(r, 1.0)) for n, r in pts[1:]]

    @classmethod
    def default(cls) -> "CostModel":
        """Until measured: a curve between a CPU's and a GPU's, so that drafting starts
        and is measured."""
        return cls({1: 1.0, 2: 1.1, 4: 1.2, 8: 1.4, 12: 1.6})

    def ratio(self, n: int) -> float:
        pts = self.points
        if n <= 1:
            return 1.0
        for (n0, r0), (n1, r1) in zip(pts, pts[1:]):
            if n <= n1:
                return r0 + (r1 - r0) * (n - n0) / (n1 - n0)
        if len(pts) == 1:
            return float(n)
        (n0, r0), (n1, r1) = pts[-2], pts[-1]
        return r1 + max(0.0, (r1 - r0) / (n1 - n0)) * (n - n1)  # a cheap last size is no trend

    def padded_size(self, n: int) -> int:
        """The row count to run for n rows: the smallest of n and the measured sizes
        above it that costs within _PAD_NOISE of the cheapest of them (timing noise
        on a flat curve pads nothing)."""
        sizes = [n] + [m for m, _ in self.points if m > n]
        floor = min(self.ratio(m) for m in sizes)
        return next(m for m in sizes if self.ratio(m) <= floor * _PAD_NOISE)

    def effective(self) -> "CostModel":
        """The curve a runner that pads pays: the cost of each n's padded size."""
        return CostModel({m: self.ratio(self.padded_size(m)) for m, _ in self.points})

    def tree_budget(self, most: int) -> int:
        """Draft nodes (at most `most`) to verify per round, filled by a drafter's
        runner-up guesses and copied branches: the count that maximises what a round
        emits per cost, each node taken to add _NODE_WORTH to it. Where a forward of n
        rows costs about the same for every n this is `most`; a size that costs a jump
        more than the one below it is not worth one more node."""
        return max(range(1, most + 1), key=lambda n: ((1 + _NODE_WORTH * n) / self.ratio(n + 1), n))

    def to_json(self) -> dict:
        return {str(n): round(r, 4) for n, r in self.points}


def measure(runner, token: int, sizes=SIZES) -> tuple[CostModel, float]:
    """Time forwards of n copies of `token` appended to the runner's cache (each one
    trimmed again); returns the cost model and the seconds of a one-token forward."""
    import mlx.core as mx

    def timed(n: int) -> float:
        t0 = time.perf_counter()
        mx.eval(runner.forward([token] * n))  # forward() leaves its logits unevaluated
        dt = time.perf_counter() - t0
        runner.trim(n)
        return dt

    timed(1)  # warm
    # Interleaved, the fastest of REPEATS each: a busy moment (another process, a page
    # fault) slows one timing, and a curve cached from it would hold speculation back.
    best = {n: float("inf") for n in (1, *sizes)}
    for _ in range(REPEATS):
        for i, n in enumerate(s for s in sizes if s > 1):
            if i % 3 == 0:  # one-token forwards between the sizes, less often than the sizes
                best[1] = min(best[1], timed(1))
            best[n] = min(best[n], timed(n))
    one = best[1]
    ratios = {n: best[n] / one for n in sizes if n > 1}
    ratios[1] = 1.0
    return CostModel(ratios), one


_MEMORY: dict = {}


def cached(key: str, path: Optional[Path]) -> Optional[CostModel]:
    if key in _MEMORY:
        return _MEMORY[key]
    if path is not None and path.is_file():
        try:
            data = json.loads(path.read_text()).get(f"{MEASURED_BY}|{key}")
            if data:
                _MEMORY[key] = CostModel({int(n): float(r) for n, r in data.items()})
                return _MEMORY[key]
        except (OSError, ValueError, TypeError, AttributeError):
            return None
    return None


def remember(key: str, model: CostModel, path: Optional[Path]) -> None:
    _MEMORY[key] = model
    if path is None:
        return
    from mlxspec.atomic import atomic_write_text

    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data = {k: v for k, v in data.items() if k.startswith(f"{MEASURED_BY}|")}
    data[f"{MEASURED_BY}|{key}"] = model.to_json()
    try:
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # a read-only model folder: measure again next time
