"""The middle level of early-exit verification: the target's layers up to an exit layer m
run on drafted tokens, over the target's own KV caches, and the full pass later runs
only layers m..L-1 on the tokens that level kept, from their layer-m states.

It works on the engine's runner as it is (a TargetRunner, or a HeadTargetRunner whose
layers 0..k-1 the head drafter shares), so the drafter keeps the runner it made.

Cache layout during a round, with `length` = tokens in layers m..L-1 (verified S[:-1]):
    layers k..m-1 (k = 0 without a head) hold `mid` >= length tokens: the root S[-1]
    and the tentative tokens the middle level kept, except the newest one (the exit's
    own token, not run yet); their layer-m (and layer-k) states are kept here.
    A head runner's layers 0..k-1 and head cache hold the same `mid` after a check.
No layer runs twice on a token: the check reuses the draft's layer-k states (the head
runner's pending drafts) and the full pass the check's layer-m states.
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx

from mlxspec.runtime.exit_tap import over_cache, to_final
from mlxspec.tree import chain_parents


def default_exit_layer(num_layers: int, draft_layer: int = 0) -> int:
    """About a quarter of the depth, above a head's own exit (by about an eighth)."""
    m = max(round(num_layers / 4), draft_layer + max(1, round(num_layers / 8)) if draft_layer else 1)
    return max(draft_layer + 1, min(num_layers - 1, m))


class ExitLevels:
    """`exit`: None (the untrained exit: the target's final norm and LM head on layer-m
    states), or a trained one with `state(m, h_m)` -> the normalised state the LM head
    reads and the tap protocol (runtime/exit_tap.py), which hears the full pass."""

    def __init__(self, runner, exit_layer: Optional[int] = None, exit=None):
        lm = runner.lm
        if lm is None:
            raise ValueError("early-exit verification needs layer access to the target")
        self.runner, self.lm, self.exit = runner, lm, exit
        self.k = int(getattr(runner, "k", 0))  # layers a head drafter shares (0: none)
        L = lm.num_layers
        self.m = default_exit_layer(L, self.k) if exit_layer is None else int(exit_layer)
        if not self.k < self.m < L:
            raise ValueError(f"the exit layer must be in {self.k + 1}..{L - 1}, got {self.m}")
        self._hk: list[mx.array] = []  # layer-k states of the kept positions (head runner)
        self._hm: list[mx.array] = []  # layer-m states of the kept positions
        self._last = None  # (layer-k states, layer-m states) of the last check
        self.mid = runner.length

    @property
    def pending(self) -> int:
        """Positions the middle level holds that the full pass has not verified."""
        return self.mid - self.runner.length

    def _mid_caches(self):
        return self.runner.cache[self.k : self.m] if self.k else self.runner.cache[: self.m]

    # -- the middle level ----------------------------------------------------------
    def check(self, x: int, drafts: list[int]) -> mx.array:
        """Exit logits (1 + n, V) for token x (the newest tentative token, or S[-1]) and n
        drafts after it: row 0 predicts the token after x, row i + 1 after drafts[i]."""
        run, lm = self.runner, self.lm
        tokens = [int(x)] + [int(t) for t in drafts]
        if self.k:
            if run.low_len != self.mid + len(run._pend_tokens):
                raise RuntimeError("the head runner's drafts do not follow the tentative tokens")
            parts = run._take_pending(tokens, chain_parents(len(tokens)))
            if len(parts) < len(tokens):
                parts.append(run._lower(tokens[len(parts):]))
            h_k = parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=1)
        else:
            h_k = lm.embed(tokens)
        h_m = lm.run_layers(h_k, self.k, self.m, run.cache)
        hx = lm.norm(h_m) if self.exit is None else self.exit.state(self.m, h_m)
        out = lm.logits(hx)[0].astype(mx.float32)  # unevaluated: the loop reads ids
        mx.async_eval(h_m)
        self._last = (h_k if self.k else None, h_m)
        self.mid += len(tokens)
        return out

    def keep_check(self, accepted: int) -> None:
        """After check(): keep x and the first `accepted` drafts, drop the rest."""
        h_k, h_m = self._last
        self._last = None
        n = h_m.shape[1]
        drop = n - 1 - accepted
        if drop > 0:
            for c in self._mid_caches():
                c.trim(drop)
            if self.k:
                self.runner._rewind_lower(drop)
            self.mid -= drop
        self._hm.append(h_m[:, : accepted + 1])
        if h_k is not None:
            self._hk.append(h_k[:, : accepted + 1])

    # -- the full pass -------------------------------------------------------------
    def full(self) -> mx.array:
        """Target logits (n, V) for the n positions the middle level kept (row i predicts
        the token after position length + i), from their layer-m states."""
        run, lm = self.runner, self.lm
        h_m = self._hm[0] if len(self._hm) == 1 else mx.concatenate(self._hm, axis=1)
        if h_m.shape[1] != self.pending:
            raise RuntimeError("the kept layer-m states do not match the tentative positions")
        hn = to_final(lm, h_m, self.m, self.exit, over_cache(lm, run.cache))  # a trained exit learns from it too
        out = lm.logits(hn)[0].astype(mx.float32)
        mx.async_eval(hn)
        self._hn = hn
        return out

    def keep_full(self, kept: int) -> None:
        """After full(): the first `kept` positions are verified (the root and the accepted
        tentative tokens); every layer drops the rest."""
        run = self.runner
        n = self.pending
        drop = n - kept
        if self.k and run.low_len > self.mid:  # drafts fed after the last check: never checked
            run._rewind_lower(run.low_len - self.mid)
            run._pend_tokens, run._pend_h, run._pend_par = [], [], []
        if drop > 0:
            for c in run.cache[self.m :]:
                c.trim(drop)
            for c in self._mid_caches():
                c.trim(drop)
            if self.k:
                run._rewind_lower(drop)
        start = run.length
        run.length += kept
        self.mid = run.length
        if self.k:
            # the head's cache over verified tokens from the true states (and the
            # adapting head's recorder: verified states only)
            h_k = self._hk[0] if len(self._hk) == 1 else mx.concatenate(self._hk, axis=1)
            run.low_len = run.length
            run._rebuild_head(start, h_k[:, :kept], self._hn[:, :kept])
            mx.async_eval(run._feats, run.head_cache.keys, run.head_cache.values)
        self._hk, self._hm, self._hn = [], [], None
