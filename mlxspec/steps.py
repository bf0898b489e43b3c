"""The engine's decode steps: the first token, a plain step, a verification round, a
draft, and the pipelined plain loop. Logits stay on the device; token ids (and the few
probabilities sampled verification compares) are read through runtime/host.py.

`Engine.host_rows` (off) brings back the old full-row copy: every step reads its logits
rows to the host and picks there (sampling.py / verify.py's float64 host rules). The
host-traffic test uses it as its control.
"""
from __future__ import annotations

import time
from typing import Iterator, Optional

import mlx.core as mx
import numpy as np

from mlxspec.device_sampling import draw, greedy_ids, has_penalty, key_from, probs_rows
from mlxspec.errors import ModelLoadError
from mlxspec.runtime.host import to_host
from mlxspec.sampling import greedy_token, probs_from_logits, sample
from mlxspec.tree import DraftTree
from mlxspec.verify import verify
from mlxspec.verify_device import host_tree


def _non_finite(engine) -> ModelLoadError:
    return ModelLoadError(
        f"model '{engine.model_name}' gave non-finite logits (NaN or inf): its weights are damaged; "
        f"reinstall it (mlxspec models pull {engine.model_name} --force)")


def _pick_lazy(logits: mx.array, win, params, rng, full_sort: bool = False):
    """(the next token of one row (1, V), unread; its top-p flag or None)."""
    if params.greedy:
        return greedy_ids(logits, None, params, win=win)[0], None
    P, ok = probs_rows(logits, None, params, win=win, full_sort=full_sort)
    return draw(P, key_from(rng))[0], (None if ok is None else ok[0])


def _window(context: list[int], params, vocab: int):
    from mlxspec.device_sampling import windows

    return windows([context], params, vocab)


def pick(logits, context: list[int], params, rng, check_finite=None) -> int:
    """The target's next token after one row of logits (1, V), read as one id.
    `check_finite`: the engine, to refuse a model whose logits are NaN or inf."""
    if isinstance(logits, np.ndarray):  # the host path (Engine.host_rows)
        if check_finite is not None and not np.isfinite(logits).all():
            raise _non_finite(check_finite)
        if params.greedy:
            return greedy_token(logits[-1], context, params)
        return sample(probs_from_logits(logits[-1], context, params), rng)
    win = _window(context, params, logits.shape[-1])
    tok, ok = _pick_lazy(logits, win, params, rng)
    extra = [mx.all(mx.isfinite(logits))] if check_finite is not None else []
    got = to_host(tok, *([ok] if ok is not None else []), *extra)
    got = got if isinstance(got, tuple) else (got,)
    if check_finite is not None and not bool(got[-1]):
        raise _non_finite(check_finite)
    if ok is not None and not bool(got[1]):  # top-p needed more than its candidates
        return int(to_host(_pick_lazy(logits, win, params, rng, full_sort=True)[0]))
    return int(got[0])


def _rows(engine, logits: mx.array):
    return to_host(logits) if engine.host_rows else logits


def first_token(engine, logits: mx.array, seq: list[int], params, rng) -> int:
    """The token after the prefill's last row (V,)."""
    return pick(_rows(engine, logits[None]), seq, params, rng, check_finite=engine)


def copies_alone(engine, gov, k, room, params, rng) -> bool:
    """Whether this round drafts the copied branches alone, skipping the drafter's own
    draft steps: when its guesses are not expected to pay (k == 0), or when a copied
    branch is long and trusted enough to emit faster without them."""
    d = engine.drafter
    if gov is None or room <= 1 or not gov.free_drafts_allowed or not getattr(d, "has_free_branches", False):
        return False
    return not k or gov.copies_pay_more(d.copy_depth(min(gov.max_k, room - 1), params, rng), k)


def draft(engine, k, room, seq, params, rng, free=False) -> tuple[Optional[DraftTree], float]:
    """The drafter's tree (`free`: its copied branches alone), cut to what this call
    may still emit and what the context still holds; None when it proposed nothing."""
    t0 = time.perf_counter()
    propose = engine.drafter.propose_free if free else engine.drafter.propose
    tree = propose(min(k, room - 1), params, rng, max_nodes=engine.tree_nodes)
    t_draft = time.perf_counter() - t0
    if not engine.runner.supports_tree and not tree.is_chain:
        tree = tree.first_chain()
    slots = engine.max_context - len(seq) if engine.max_context else len(tree)
    tree = tree.cut(room - 1, slots)
    return (tree if len(tree) else None), t_draft


def plain_step(engine, seq, params, rng, gov) -> list[int]:
    t0 = time.perf_counter()
    nxt = pick(_rows(engine, engine.runner.forward([seq[-1]])), seq, params, rng)
    dt = time.perf_counter() - t0
    if gov is not None:
        gov.record_plain(dt)
        engine.plain_step_s = gov.plain_step_s
        engine.drafter.extend([nxt])
    seq.append(nxt)
    return [nxt]


def verify_round(engine, seq, params, rng, gov, tree: DraftTree, t_draft: float, free: bool = False) -> list[int]:
    if engine.verify_mode == "early-exit":
        from mlxspec.hierarchy import early_exit_round

        out = early_exit_round(engine, seq, params, rng, gov, tree, t_draft)
        if out is not None:  # None: no layer access, the exact round below
            return out
    t0 = time.perf_counter()
    logits = engine.runner.verify(seq[-1], tree, engine.verify_rows(len(tree) + 1, len(seq) - 1))
    if engine.relax is not None:
        rows = (to_host(logits), host_tree(tree)) if engine.host_rows else (logits, tree)
        path, nxt = engine.relax.verify(rows[0], rows[1], seq, params, rng, engine.verify_stats)
    elif engine.host_rows:
        path, nxt = verify(to_host(logits), host_tree(tree), seq, params, rng)
    else:
        path, nxt = verify(logits, tree, seq, params, rng)
    engine.runner.keep(tree, path)
    kept = [tree.tokens[i] for i in path]
    sources = getattr(engine.drafter, "last_sources", None)
    own, copy = sources() if sources is not None and not free else (None, None)
    engine.drafter.accept(kept, nxt)
    depth, matched = tree.depth, len(path)
    truth = kept + [nxt]
    if own is not None and params.greedy:  # the drafter's own guesses, apart from the copies beside them
        matched = own.matched(truth)
        depth = own.depth if matched < len(truth) else matched  # past what is known: no miss
    gov.record_round(time.perf_counter() - t0 + t_draft, depth, matched, len(path) + 1,
                     t_draft, tree.guessed, free, engine.drafter.last_catch_up_s())
    if copy:  # the copies were verified too: their rate is measured in every round
        gov.record_copy(len(copy), DraftTree.chain(copy).matched(truth), len(truth))
    seq.extend(kept)
    seq.append(nxt)
    return kept + [nxt]


def pipelined(engine, logits: mx.array, seq: list[int], params, rng, count: int, t0: float) -> Iterator[int]:
    """`count` plain tokens after the prefill's last row (V,), as mlx-lm's generate_step
    takes them: step t + 1's forward is built on step t's unread token and evaluated
    asynchronously while the host reads step t. Each token is appended to seq before it
    is yielded; the engine's prefill_stats are set when the first one is read."""
    runner, size = engine.runner, params.repetition_context_size
    pen = has_penalty(params)

    def grow(ctx, y):  # the penalty window after token y (unread)
        return mx.concatenate([ctx, y.reshape(1).astype(mx.int32)])[-size:] if pen else None

    ctx = mx.array(np.asarray(seq[-size:], dtype=np.int32)) if pen else None
    rows = logits[None]
    y, ok = _pick_lazy(rows, None if ctx is None else ctx[None], params, rng)
    finite = mx.all(mx.isfinite(logits))
    for i in range(count):
        nctx = grow(ctx, y)
        nxt = nok = nrows = None
        if i + 1 < count:
            nrows = runner.forward(y.reshape(1))
            nxt, nok = _pick_lazy(nrows, None if nctx is None else nctx[None], params, rng)
            mx.async_eval(nxt, *([nok] if nok is not None else []))
        got = to_host(y, *([ok] if ok is not None else []), *([finite] if i == 0 else []))
        got = got if isinstance(got, tuple) else (got,)
        if i == 0 and not bool(got[-1]):
            raise _non_finite(engine)
        tok = int(got[0])
        if ok is not None and not bool(got[1]):  # top-p needed more than its candidates
            exact, _ = _pick_lazy(rows, None if ctx is None else ctx[None], params, rng, full_sort=True)
            tok = int(to_host(exact))
            if nxt is not None:  # step t + 1 was built on the other token: again, on this one
                runner.trim(1)
                y = mx.array([tok], dtype=mx.uint32)
                nctx = grow(ctx, y[0]) if pen else None
                nrows = runner.forward(y)
                nxt, nok = _pick_lazy(nrows, None if nctx is None else nctx[None], params, rng)
        if i == 0:
            engine.prefill_stats = (engine.prefill_stats[0], time.perf_counter() - t0)
        seq.append(tok)
        yield tok
        y, ok, ctx, rows = nxt, nok, nctx, nrows
