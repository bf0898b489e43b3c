"""The baseline drafter: a separate small model that shares the target's tokenizer."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Optional

import mlx.core as mx
import numpy as np

from mlxspec import device_sampling as dev
from mlxspec.drafters.base import Drafter
from mlxspec.runtime.host import ids
from mlxspec.runtime.target import TargetRunner
from mlxspec.sampling import SamplingParams, greedy_view
from mlxspec.tree import DraftTree

DEFAULT_MIN_CONFIDENCE = 0.25  # stop drafting below this draft probability


class ModelDrafter(Drafter):
    name = "draft-model"
    greedy_q = False  # True: q rows in greedy decoding too (relaxed.request_draft_rows)

    def __init__(self, model, target_vocab_size: int, label: str = "draft-model",
                 min_confidence: float = DEFAULT_MIN_CONFIDENCE, pipeline: Optional[bool] = None):
        self.model = model
        self.name = label
        self.vocab_size = target_vocab_size
        self.min_confidence = min_confidence
        self.pipeline = pipeline  # build a step before the last is read; None: on a GPU
        self._runner: Optional[TargetRunner] = None
        self._seq: list[int] = []  # every token of the sequence
        self._cached: list[int] = []  # tokens whose KV is in the draft's cache
        self._catch_up_s = 0.0

    def memory_bytes(self) -> int:
        from mlxspec.runtime.weights import param_bytes

        return param_bytes(self.model)

    def step_cost_hint(self, target_bytes: int) -> Optional[float]:
        # Decoding one token reads every weight once on any device: the bytes' ratio.
        return self.memory_bytes() / target_bytes if target_bytes > 0 else None

    # -- sequence bookkeeping --------------------------------------------------------
    def reset(self, tokens: list[int], runner=None) -> None:
        if self._runner is None:
            self._runner, self._cached = TargetRunner(self.model), []
        self._seq = [int(t) for t in tokens]
        self._catch_up()

    def _catch_up(self) -> None:
        """Feed the draft model the new context up to the last token (the first draft
        step's input) as the reply starts, with the target's prefill: inside the first
        draft step its time would read as the cost of drafting, and a few new prompts
        could price the draft model out of every later round."""
        todo = self._sync()
        if len(todo) < 2:
            return
        with self._guard():
            self._feed(todo[:-1])

    @contextmanager
    def _guard(self):
        """Work on the draft cache: if it fails half-way, the cache is rebuilt on the next reset."""
        try:
            yield
        except BaseException:
            self._runner = None
            raise

    def last_catch_up_s(self) -> float:
        return self._catch_up_s

    def extend(self, tokens: list[int]) -> None:
        self._seq.extend(int(t) for t in tokens)

    def _sync(self) -> list[int]:
        """Rewind the draft cache to its longest prefix of the sequence (drafts that
        were not kept, or another branch of a tree); return the tokens still to feed,
        at least the last one."""
        keep = 0
        n = min(len(self._cached), len(self._seq) - 1)
        while keep < n and self._cached[keep] == self._seq[keep]:
            keep += 1
        self._runner.trim(len(self._cached) - keep)
        del self._cached[keep:]
        return self._seq[keep:]

    # -- drafting ---------------------------------------------------------------------
    def _feed(self, tokens: list[int]) -> None:
        """Put `tokens` in the draft cache, evaluated, with no logits row."""
        self._runner.prefill(tokens, logits=False)
        self._cached.extend(tokens)

    def _logits(self, tokens: list[int]):
        """The draft's logits row (V,) after `tokens`, on the device."""
        if len(tokens) > 1:
            out = self._runner.prefill(tokens)
        else:
            out = self._runner.forward(tokens, last_only=True)[-1]
        self._cached.extend(tokens)
        return dev.fit_vocab(out, self.vocab_size)

    def _next_row(self, token: mx.array):
        """The draft's logits after a token still on the device (not in _cached yet)."""
        return dev.fit_vocab(self._runner.forward(token.reshape(1), last_only=True)[-1], self.vocab_size)

    def _window(self, params: SamplingParams):
        """The penalty window (1, W) of the sequence on the device; None without a penalty."""
        if not dev.has_penalty(params):
            return None
        return mx.array(np.asarray(self._seq[-params.repetition_context_size:], dtype=np.int32))[None]

    @staticmethod
    def _grow(win, token: mx.array, params: SamplingParams):
        if win is None:
            return None
        return mx.concatenate([win[0], token.reshape(1).astype(mx.int32)])[-params.repetition_context_size:][None]

    def _pick(self, row, win, params: SamplingParams, rng):
        """(token, q or None, confidence) of one draft step, unread."""
        tok, q, confidence = dev.draft_pick(row, None, params, rng, win=win)
        if q is None and self.greedy_q:  # relaxed greedy verification blends q
            q = dev.probs_rows(row[None], None, greedy_view(params), win=win)[0][0]
        return tok, q, confidence

    def propose(self, k: int, params: SamplingParams, rng: np.random.Generator, max_nodes=None) -> DraftTree:
        """Up to k draft steps. Without a confidence floor nothing decides between steps:
        all k are queued and read in one sync. With one, each step's token is read to
        decide whether to go on; where the device overlaps compute with that read (a
        GPU), step i + 1's forward is built on step i's token before it is read (its KV
        is kept when drafting stops there: the next _sync trims it). On a CPU nothing
        overlaps, and a step built ahead of a stop would be a whole draft step wasted."""
        ahead_of_read = self.pipeline if self.pipeline is not None else mx.default_device() != mx.cpu
        with self._guard():
            todo = self._sync()
            self._catch_up_s = 0.0
            if len(todo) > 2:  # tokens of plain steps since the last draft: fed apart, timed apart
                t0 = time.perf_counter()
                self._feed(todo[:-1])
                self._catch_up_s = time.perf_counter() - t0
                todo = todo[-1:]
            row = self._logits(todo)
            win = self._window(params)
            step = self._pick(row, win, params, rng)
            tokens: list[int] = []
            probs: list[Optional[object]] = []  # q rows stay on the device
            unread = [] if self.min_confidence <= 0 else None
            for i in range(k):
                tok, q, confidence = step[:3]
                ahead = i < k - 1
                nxt = self._next(tok, win, params, rng) if ahead and (unread is not None or ahead_of_read) else None
                if unread is not None:
                    unread.append(tok)
                    probs.append(q)
                    if nxt is not None:
                        step, win = nxt, nxt[3]
                    continue
                tid, confidence = dev.read_pick(tok, confidence)  # the step's one read
                probs.append(q)
                tokens.append(tid)
                if not ahead or confidence < self.min_confidence:
                    if nxt is not None:
                        self._cached.append(tid)  # fed ahead
                    break
                step = nxt if nxt is not None else self._next(tok, win, params, rng)
                win = step[3]
                self._cached.append(tid)
            if unread:
                tokens = ids(mx.stack(unread))
                self._cached.extend(tokens[:-1])  # fed ahead
        return DraftTree.chain(tokens, probs)

    def _next(self, tok: mx.array, win, params: SamplingParams, rng):
        """The next draft step on a token still on the device, queued: (token, q,
        confidence, its penalty window)."""
        win = self._grow(win, tok, params)
        step = self._pick(self._next_row(tok), win, params, rng)
        mx.async_eval(step[0], step[2])
        return (*step, win)
