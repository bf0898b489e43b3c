"""Relaxed verification (DIVERSED): verify drafts against an ensemble of the draft's and
the target's distributions instead of the target's alone. Opt-in (`verify="relaxed"`),
bounded by a fidelity budget, and always reported.

The ensemble at a position, with the target's processed distribution p and the draft's
q there (both built by sampling.probs_from_logits under the same parameters, so the
temperature, top-p/k and the repetition penalty apply to both before they are blended):

    p_ens = normalise(p^(1 - w) * q^w)      on the draft's support S = {x : q(x) > 0},
            rescaled to p's own mass on S;   p_ens(x) = p(x) outside S.

A geometric blend of processed distributions is the blend of their logits at that
temperature (what DIVERSED does with logits). Mixing only over S is our choice for
drafters whose q has zeros (the head's pruned vocabulary, top-k/top-p): a plain
p^(1-w) q^w would zero every token the draft cannot name, even the target's favourite;
here the target keeps exactly its mass outside S and w only moves mass within S, so
w = 0 is p and the target's zeros stay zeros (nothing it forbids is ever emitted).

Greedy decoding blends the temperature-1 distributions (with the repetition penalty)
and takes the argmax of p_ens: a draft token is kept when it is that argmax.
Sampling runs the standard rule against p_ens: x ~ q kept with probability
min(1, p_ens(x)/q(x)), else the residual norm(max(0, p_ens - q)) and the next sibling
(tree drafts: copied point masses as in verify.py). A position whose draft has no
distribution (a copied token, the bonus token after an accepted leaf) is exact.

The budget: TV(p_ens, p) = 0.5 * sum|p_ens - p| per position; above it that position
is verified exactly against p. Counters (into Engine.verify_stats, per reply, over the
tokens verification rounds emitted; a round cut by a stop is counted whole):
relaxed_tokens (greedy: emitted tokens that are not the target's argmax; sampling:
positions drawn from a p_ens != p), relaxed_positions (positions verified against a
p_ens != p), over_budget (positions verified exactly because TV > budget), tv_mean
and tv_max (TV of the distribution used against p, over emitted positions).

The weight is a number, or a learned head (relax_head.py, `mlxspec train-relax`) that
gives each position its own w from p and q.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from mlxspec.errors import InvalidParameterError
from mlxspec.sampling import SamplingParams, greedy_token, greedy_view, probs_from_logits  # noqa: F401 (greedy_view: relaxed's name too)
from mlxspec.tree import DraftTree
from mlxspec.verify import _verify_greedy, _verify_sampling, kids_of

DEFAULT_WEIGHT = 0.5  # w, the draft's share of the blend
DEFAULT_BUDGET = 0.3  # the largest TV(p_ens, p) verified against p_ens (docs/benchmarks.md)


def draft_row(logits: np.ndarray, context, params: SamplingParams) -> np.ndarray:
    """A drafter's distribution q for relaxed verification (greedy: greedy_view's)."""
    return probs_from_logits(logits, context, greedy_view(params) if params.greedy else params)


def ensemble(p: np.ndarray, q: np.ndarray, weight: float) -> np.ndarray:
    """p_ens of the module docstring."""
    if weight <= 0.0:
        return p
    s = q > 0
    mass = float(p[s].sum())
    if mass <= 0.0:
        return p
    with np.errstate(divide="ignore"):
        z = (1.0 - weight) * np.log(p[s]) + weight * np.log(q[s])
    z = np.exp(z - np.max(z))  # finite: some x in S has p(x) > 0
    out = p.copy()
    out[s] = mass * z / z.sum()
    return out


def tv(a: np.ndarray, b: np.ndarray) -> float:
    return 0.5 * float(np.abs(a - b).sum())


@dataclass(frozen=True)
class Relaxed:
    weight: float = DEFAULT_WEIGHT
    budget: float = DEFAULT_BUDGET
    head: Optional[object] = None  # a relax_head.RelaxHead: w per position instead of `weight`

    @classmethod
    def checked(cls, weight, budget: Optional[float]) -> "Relaxed":
        """weight: a number, None (the default) or a learned RelaxHead."""
        if hasattr(weight, "weight_of"):
            return cls(weight.w_max, cls.checked(None, budget).budget, weight)
        w = DEFAULT_WEIGHT if weight is None else weight
        b = DEFAULT_BUDGET if budget is None else budget
        for name, v in (("relax weight", w), ("relax budget", b)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                raise InvalidParameterError(f"{name} must be a finite number, got {v!r}")
        if not 0.0 <= w < 1.0:  # w = 1 would drop the target from the blend
            raise InvalidParameterError(f"relax weight must be in [0, 1), got {w}")
        if not 0.0 <= b <= 1.0:
            raise InvalidParameterError(f"relax budget (a total-variation distance) must be in [0, 1], got {b}")
        return cls(float(w), float(b))

    def blend(self, p: np.ndarray, q: Optional[np.ndarray]) -> tuple[np.ndarray, float, bool]:
        """(the distribution to verify against, its TV from p, whether the budget refused it)."""
        if q is None or self.weight <= 0.0:
            return p, 0.0, False
        e = ensemble(p, q, self.weight if self.head is None else self.head.weight(p, q))
        d = tv(e, p)
        if d > self.budget:
            return p, 0.0, True
        return (e, d, False) if d > 0.0 else (p, 0.0, False)

    def verify(self, logits: np.ndarray, tree: DraftTree, context: list[int], params: SamplingParams,
               rng: Optional[np.random.Generator], stats: dict) -> tuple[list[int], int]:
        """verify.verify's contract, against p_ens; counts into `stats`. Rows on the device
        are verified there (relaxed_device.py) unless a learned weight needs host rows."""
        count = Counter(stats)
        if not isinstance(logits, np.ndarray):
            if self.head is None:
                from mlxspec import verify_device
                from mlxspec.relaxed_device import DeviceBlend

                return verify_device.verify(logits, tree, context, params, rng, DeviceBlend(self, count))
            from mlxspec.runtime.host import to_host
            from mlxspec.verify_device import host_tree

            logits, tree = to_host(logits), host_tree(tree)
        if params.greedy:
            return self._greedy(logits, tree, context, params, count)
        if rng is None:
            raise ValueError("sampling verification needs a random generator")
        return self._sampling(logits, tree, context, params, rng, count)

    def _greedy(self, logits, tree, context, params, count):
        kids = kids_of(tree)
        view = greedy_view(params)

        def choose(row, text, at):
            target_best = greedy_token(row, text, params)
            q = _draft_q(tree, kids.get(at, []))
            best, d, over, used = target_best, 0.0, False, False
            if q is not None and self.weight > 0.0:
                r, d, over = self.blend(probs_from_logits(row, text, view), q)
                used = d > 0.0
                if used:
                    best = int(np.argmax(r))
            count.add(used, d, over, best != target_best)
            return best

        return _verify_greedy(logits, tree, context, params, choose)

    def _sampling(self, logits, tree, context, params, rng, count):
        def against(p, children):
            r, d, over = self.blend(p, _draft_q(tree, children))
            used = r is not p
            count.add(used, d, over, used)
            return r

        return _verify_sampling(logits, tree, context, params, rng, against)


def _draft_q(tree: DraftTree, children: list[int]) -> Optional[np.ndarray]:
    """The draft's distribution at a position: its first drafted (not copied) child's q."""
    return next((tree.q[c] for c in children if tree.q[c] is not None), None)


class Counter:
    """The per-reply counters of the module docstring, kept in a verify_stats dict."""

    def __init__(self, stats: dict):
        self.stats = stats
        for k in ("relaxed_tokens", "relaxed_positions", "over_budget", "relax_checked"):
            stats.setdefault(k, 0)
        stats.setdefault("tv_mean", 0.0)
        stats.setdefault("tv_max", 0.0)

    def add(self, used: bool, d: float, over: bool, differs: bool) -> None:
        s = self.stats
        s["relax_checked"] += 1
        s["relaxed_positions"] += bool(used)
        s["relaxed_tokens"] += bool(differs)
        s["over_budget"] += bool(over)
        s["tv_mean"] += (d - s["tv_mean"]) / s["relax_checked"]  # a running mean
        s["tv_max"] = max(s["tv_max"], d)


def request_draft_rows(drafter) -> None:
    """Ask a drafter (and the parts of a composition) for its q rows in greedy decoding
    too: relaxed greedy verification blends them. Copied tokens stay point masses."""
    _set_draft_rows(drafter, True)


def configure(engine, verify: str, weight: Optional[float] = None, budget: Optional[float] = None) -> None:
    """Switch a loaded engine between exact and relaxed verification (the eval compares
    settings on one loaded model). Exact turns the drafters' greedy q rows off again."""
    if verify not in ("exact", "relaxed"):
        raise InvalidParameterError(f"only exact and relaxed can be switched on a loaded engine, got {verify!r}")
    engine.relax = Relaxed.checked(weight, budget) if verify == "relaxed" else None
    engine.verify_mode = verify
    _set_draft_rows(engine.drafter, verify == "relaxed")


def _set_draft_rows(drafter, on: bool) -> None:
    if drafter is None:
        return
    drafter.greedy_q = on
    for part in getattr(drafter, "parts", []):
        _set_draft_rows(part, on)
