"""Logit processing on the device, shared by the target (p) and every drafter (q): the
same rule as sampling.py's host functions (repetition penalty, temperature, top-k,
top-p), as mx operations over rows, so logits never leave the device.

Rows are (R, V) float32 logits, each with its own context (the penalty's window is the
context's last `repetition_context_size` tokens: in a draft tree, the text up to that
node). The work is float32 (sampling.py's host reference is float64); the engine uses
these functions for plain steps and for verification alike, so speculative output
equals plain output whatever rounding they do.

top-p sorts only the TOP_P_CANDIDATES likeliest tokens of a row (a full sort of a
150k vocabulary costs more than a small model's forward on a CPU). When those hold
less than top_p of the mass the row is flagged (`ok` False) and the caller recomputes
it with `full_sort=True`, so the rule is always exact.
"""
from __future__ import annotations

from typing import Optional, Sequence

import mlx.core as mx
import numpy as np

from mlxspec.sampling import SamplingParams

TOP_P_CANDIDATES = 4096


def has_penalty(params: SamplingParams) -> bool:
    return params.repetition_penalty is not None and params.repetition_penalty != 1.0


def windows(contexts: Sequence[Sequence[int]], params: SamplingParams, vocab: int):
    """(index (R, W), valid (R, W) or None) of each row's penalty window on the device;
    short rows repeat one of their own ids (a repeated write is the same value), an
    empty row writes index 0 back unchanged. None without a penalty."""
    if not has_penalty(params):
        return None
    size = params.repetition_context_size
    rows = [[int(t) for t in list(c)[-size:] if 0 <= int(t) < vocab] for c in contexts]
    W = max(1, max(len(r) for r in rows))
    idx = np.zeros((len(rows), W), dtype=np.int32)
    valid = np.zeros((len(rows), W), dtype=bool)
    for i, r in enumerate(rows):
        if r:
            idx[i, : len(r)] = r
            idx[i, len(r):] = r[0]  # the same id, penalised again from the same value
            valid[i] = True
    return mx.array(idx), (None if valid.all() else mx.array(valid))


def penalize(logits: mx.array, win, params: SamplingParams) -> mx.array:
    """CTRL repetition penalty over each row's window (`windows()`, or an (R, W) index
    array built on the device); float32 rows."""
    logits = logits.astype(mx.float32)
    if win is None:
        return logits
    idx, valid = win if isinstance(win, tuple) else (win, None)
    rp = params.repetition_penalty
    vals = mx.take_along_axis(logits, idx, axis=1)
    new = mx.where(vals < 0, vals * rp, vals / rp)
    if valid is not None:
        new = mx.where(valid, new, vals)
    return mx.put_along_axis(logits, idx, new, axis=1)


def greedy_ids(logits: mx.array, contexts, params: SamplingParams, win=None) -> mx.array:
    """The target's greedy token of every row (R,), penalty included, on the device."""
    if win is None:
        win = windows(contexts, params, logits.shape[-1])
    return mx.argmax(penalize(logits, win, params), axis=-1)


def _top_p(probs: mx.array, top_p: float, full_sort: bool) -> tuple[mx.array, Optional[mx.array]]:
    """Keep the smallest set of likeliest tokens whose mass reaches top_p (the token
    that crosses it included), renormalised; and per row whether the candidates sufficed."""
    V = probs.shape[-1]
    k = V if full_sort else min(V, TOP_P_CANDIDATES)
    cand = mx.sort(probs if k == V else mx.topk(probs, k, axis=-1), axis=-1)  # ascending
    above = mx.cumsum(cand, axis=-1, reverse=True, inclusive=False)  # mass of likelier ones
    keep = mx.sum(above < top_p, axis=-1, keepdims=True)
    thresh = mx.take_along_axis(cand, k - keep, axis=-1)
    ok = None if k == V else (above[:, :1] + cand[:, :1]) >= top_p
    out = mx.where(probs >= thresh, probs, 0.0)
    return out / mx.sum(out, axis=-1, keepdims=True), (None if ok is None else ok[:, 0])


def probs_rows(logits: mx.array, contexts, params: SamplingParams, win=None,
               full_sort: bool = False) -> tuple[mx.array, Optional[mx.array]]:
    """(the distributions to sample from (R, V) at temp > 0: penalty, temperature, top-k,
    top-p; per row whether top-p's candidates sufficed, None when no row can fail)."""
    if win is None:
        win = windows(contexts, params, logits.shape[-1])
    x = penalize(logits, win, params) / params.temp
    V = x.shape[-1]
    if 0 < params.top_k < V:
        kth = mx.min(mx.topk(x, params.top_k, axis=-1), axis=-1, keepdims=True)
        x = mx.where(x < kth, -mx.inf, x)
    probs = mx.softmax(x, axis=-1)
    if params.top_p < 1.0:
        return _top_p(probs, params.top_p, full_sort)
    return probs, None


def key_from(rng: np.random.Generator) -> mx.array:
    """A device random key drawn from the call's generator (seeded runs repeat)."""
    return mx.random.key(int(rng.integers(0, 2**63 - 1)))


def draw(probs: mx.array, key: mx.array) -> mx.array:
    """One token per row of (R, V) probabilities (unnormalised is fine), on the device."""
    return mx.random.categorical(mx.log(probs), axis=-1, key=key)


def fit_vocab(logits: mx.array, vocab_size: int) -> mx.array:
    """sampling.fit_vocab on the device: cut or pad (-inf) to the target's vocabulary."""
    n = logits.shape[-1]
    if n == vocab_size:
        return logits
    if n > vocab_size:
        return logits[..., :vocab_size]
    pad = mx.full(logits.shape[:-1] + (vocab_size - n,), -mx.inf, dtype=logits.dtype)
    return mx.concatenate([logits, pad], axis=-1)


def scatter(sub: mx.array, slots: np.ndarray, vocab: int) -> mx.array:
    """Logits over a vocabulary subset (S,), slot j holding token slots[j] (-1: empty),
    as a full row (V,) with -inf outside the subset, on the device (pruned heads)."""
    slots = slots[: sub.shape[0]]
    ok = np.nonzero(slots >= 0)[0]
    full = mx.full((vocab,), -mx.inf, dtype=mx.float32)
    full[mx.array(slots[ok].astype(np.int32))] = sub.astype(mx.float32)[mx.array(ok.astype(np.int32))]
    return full


def draft_pick(row: mx.array, context: Optional[Sequence[int]], params: SamplingParams, rng: np.random.Generator,
               win=None):
    """sampling.draft_pick on the device for one row of logits (V,): (token, the
    distribution it was drawn from or None when greedy, confidence), the token and the
    confidence as unread scalars (read them together: one sync). The penalty window is
    `context`'s, or `win` (1, W) when given (built on the device)."""
    row = row.astype(mx.float32)[None]
    if win is None:
        win = windows([context], params, row.shape[-1])
    if params.greedy:
        m = mx.max(row)
        return greedy_ids(row, None, params, win=win)[0], None, 1.0 / mx.sum(mx.exp(row - m))
    q, _ = probs_rows(row, None, params, win=win)  # q needs no exact top-p: it is what was drawn from
    return draw(q, key_from(rng))[0], q[0], mx.max(q)


def read_pick(token: mx.array, confidence) -> tuple[int, float]:
    """A draft step's token and confidence, read together: the step's one sync."""
    from mlxspec.runtime.host import to_host

    tok, conf = to_host(token, mx.array(confidence))
    return int(tok), float(conf)
