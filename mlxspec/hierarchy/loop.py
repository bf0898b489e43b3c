"""One early-exit round (Engine(verify="early-exit")), lossless.

    1. the drafter's chain (a tree: its first chain) is checked by the exit at layer m
       (the target's own final norm and LM head on layer-m states): the exact rule of
       verify.py against the exit's distribution p_m accepts a prefix, and the exit puts
       its own token after it (at the first mismatch, or after the last draft);
    2. drafting continues from there, checked the same way, until the tentative tokens
       reach the policy's length (policy.py);
    3. the full target runs layers m..L-1 on every tentative position (from their
       layer-m states) and verifies the tentative chain exactly.

Why it is exact: each tentative token is an exact sample of p_m given its prefix (the
middle level is a rejection sampler of p_m whatever the draft), so the tentative chain
is a draft whose proposal rows are p_m; verify() against the target with those rows is
the ordinary exact rule. Greedy: the tentative chain is the exit's greedy continuation
and the full pass walks it by the target's argmax. The full pass computes no row after
the last tentative token: when every one is kept, that token becomes the next input.

The drafter hears tentative tokens as they come (it must draft after them); when the
full pass rejects one it already heard, it is reset to the verified sequence.
"""
from __future__ import annotations

import time
from typing import Optional

import mlx.core as mx

from mlxspec.device_sampling import probs_rows
from mlxspec.hierarchy.state import exit_stats, flat_costs, engine_state
from mlxspec.runtime.host import to_host
from mlxspec.tree import DraftTree, chain_parents
from mlxspec.verify import verify

COUNTERS = ("intermediate_checks", "intermediate_checked", "intermediate_rejected", "full_verifications", "tentative_verified",
            "full_accepted", "single_level_rounds", "drafter_resets")
STAGES = ("draft_s", "intermediate_s", "full_s", "single_s")  # single_s: the single-level rounds


def _chain(tree: DraftTree, greedy: bool) -> DraftTree:
    """The chain the middle level checks. Greedy: the tree's deepest path (any choice is
    lossless there). Sampling: the first chain, whose choice does not depend on sampled
    tokens (a pick by depth would bias them)."""
    if tree.is_chain:
        return tree
    if not greedy:
        return tree.first_chain()
    depth, best = {}, None
    for i, p in enumerate(tree.parents):
        depth[i] = 1 + depth.get(p, 0)
        if best is None or depth[i] > depth[best]:
            best = i
    path = []
    while best is not None and best >= 0:
        path.append(best)
        best = tree.parents[best]
    path.reverse()
    return DraftTree.chain([tree.tokens[i] for i in path], [tree.q[i] for i in path],
                           min(tree.guessed, len(path)))


def _head(chain: DraftTree, n: int) -> DraftTree:
    if len(chain) <= n:
        return chain
    return DraftTree.chain(chain.tokens[:n], chain.q[:n], min(chain.guessed, n))


def _add(stats: dict, **kw) -> None:
    for key, v in kw.items():
        stats[key] = round(stats.get(key, 0) + v, 6) if isinstance(v, float) else stats.get(key, 0) + v


def early_exit_round(engine, seq, params, rng, gov, tree: DraftTree, t_draft: float) -> Optional[list[int]]:
    """The tokens of one round (appended to seq), or None when this target cannot have a
    middle level (no layer access): then the engine's exact round runs."""
    st = engine_state(engine)
    if st is None:
        return None
    stats = engine.verify_stats
    exit_stats(stats, st)
    for key in COUNTERS + STAGES:
        stats.setdefault(key, 0 if key in COUNTERS else 0.0)
    if st.policy.use_single_level():
        return _single_level(engine, st, seq, params, rng, gov, tree, t_draft)
    return _hierarchical(engine, st, seq, params, rng, gov, tree, t_draft)


def _single_level(engine, st, seq, params, rng, gov, tree, t_draft) -> list[int]:
    """The exact round (the engine's), timed for the method choice."""
    t0 = time.perf_counter()
    logits = engine.runner.verify(seq[-1], tree)  # on the device: verify reads ids
    path, nxt = verify(logits, tree, seq, params, rng)
    engine.runner.keep(tree, path)
    out = [tree.tokens[i] for i in path] + [nxt]
    engine.drafter.accept(out[:-1], nxt)
    dt = time.perf_counter() - t0
    gov.record_round(dt + t_draft, tree.depth, len(path), len(out), t_draft, tree.guessed,
                     catch_up_seconds=engine.drafter.last_catch_up_s())
    st.policy.single.add(len(out), dt + t_draft)
    _add(engine.verify_stats, single_level_rounds=1, single_s=dt + t_draft)
    seq.extend(out)
    return out


def _hierarchical(engine, st, seq, params, rng, gov, tree, t_draft) -> list[int]:
    levels, policy, drafter = st.levels, st.policy, engine.drafter
    catch_up = drafter.last_catch_up_s()  # of the first draft (later ones in the round feed none)
    greedy = params.greedy
    room = getattr(engine, "_room", None) or len(tree) + 1
    k = max(1, tree.depth)
    fixed = getattr(engine, "tentative_length", None) or 2 * k + 2
    N = min(room, policy.length(engine.cost or flat_costs(), engine.plain_step_s, fixed))
    T: list[int] = []  # tentative tokens after seq[-1]
    Q: list = []  # the exit's distribution each was drawn from (None: greedy)
    told = 0  # how many of T the drafter has heard
    ctx = list(seq)
    x = seq[-1]
    chain = _chain(tree, greedy)
    t_mid = 0.0
    guessed = tree.guessed
    checks = checked = rejected = 0
    while True:
        chain = _head(chain, N - len(T) - 1)
        t0 = time.perf_counter()
        logits = levels.check(x, chain.tokens)
        path, nxt = verify(logits, chain, ctx, params, rng)
        levels.keep_check(len(path))
        new = [chain.tokens[i] for i in path] + [nxt]
        if not greedy:
            Q += exit_rows(logits[: len(new)], [ctx + new[:i] for i in range(len(new))], params)
        T += new
        ctx += new
        checks += 1
        checked += len(chain)
        rejected += len(chain) - len(path)
        t_mid += time.perf_counter() - t0
        if len(T) >= N - 1:  # no room for a draft after the exit's token
            break
        drafter.accept(new[:-1], new[-1])
        told = len(T)
        x = nxt
        t0 = time.perf_counter()
        nxt_tree = drafter.propose(N - len(T) - 1, params, rng)
        t_draft += time.perf_counter() - t0
        guessed += nxt_tree.guessed
        if not len(nxt_tree):
            break
        chain = _chain(nxt_tree, greedy)

    t0 = time.perf_counter()
    n = len(T)
    logits = levels.full()
    rows = mx.concatenate([logits, logits[-1:]])  # the row after the last one is never used
    path, nxt = verify(rows, tentative_chain(T, Q), seq, params, rng)
    a = len(path)
    out = list(T) if a == n else T[:a] + [nxt]
    levels.keep_full(min(a + 1, n))
    if a == n:
        if told < n:
            drafter.accept(T[told:-1], T[-1])
    elif a >= told:
        drafter.accept(T[told:a], nxt)
    else:
        drafter.reset(seq + out, engine.runner)
        _add(engine.verify_stats, drafter_resets=1)
    t_full = time.perf_counter() - t0

    total = t_draft + t_mid + t_full
    gov.record_round(total, n, a, len(out), t_draft, guessed, catch_up_seconds=catch_up)
    policy.record_full(n, a, t_draft + t_mid, t_full, engine.cost or flat_costs())
    policy.early.add(len(out), total)
    _add(engine.verify_stats, intermediate_checks=checks, intermediate_checked=checked, intermediate_rejected=rejected,
         full_verifications=1, tentative_verified=n, full_accepted=a,
         draft_s=t_draft, intermediate_s=t_mid, full_s=t_full)
    s = engine.verify_stats
    _add(s, full_emitted=len(out))
    s["tokens_per_full"] = round(s["full_emitted"] / s["full_verifications"], 3)
    # what the engine reports as this round's draft: the chain the full pass verified
    tree.tokens, tree.parents, tree.q = list(T), chain_parents(n), [None] * n
    seq.extend(out)
    return out


def exit_rows(logits, contexts, params) -> list:
    """The exit's distributions that drew the tentative tokens (the middle level's exact
    rule, on the device: top-p's candidate rows are checked, one small read)."""
    P, ok = probs_rows(logits, contexts, params)
    if ok is not None and not to_host(ok).all():
        P, _ = probs_rows(logits, contexts, params, full_sort=True)
    return [P[i] for i in range(P.shape[0])]


def tentative_chain(tokens: list[int], rows: list) -> DraftTree:
    """The draft the full pass verifies: the tentative tokens with the exit's
    distributions as their proposal rows (none when greedy: point masses)."""
    return DraftTree.chain(tokens, rows or None)
