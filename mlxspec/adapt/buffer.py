"""The free training data of online adaptation: the target's states of verified tokens.

HeadTargetRunner calls `record(start, h_low, hn)` (its `recorder` hook) with the layer-k
hidden states and final normalised states it computed for positions start..start+T-1.
Those include draft tokens the target then rejects, so a record only becomes a training
row once the verified token stream says so: the drafter-side wiring feeds it with
`reset_tokens(tokens)` (a reply starts: every token so far) and `extend_tokens(tokens)`
(tokens kept). The row at position t is committed, with label tokens[t + 1], once
token t + 1 is known: the last verified row of a call waits for the next token (the next
round's, or the next call's). Pending states at positions >= start are dropped by each
record (the runner rewrote those positions), so rejected drafts are never committed.

Rows are kept in float16 (clipped to its range) in chunks of CHUNK consecutive positions
of one context: the head is a transformer block, it trains on windows, not single rows.
Memory is capped (`cap_bytes`, default 64 MiB; `nbytes` reports it). Eviction: when full,
the oldest recent chunk leaves; a `replay_fraction` of the capacity is a reservoir that
keeps a uniform sample of every chunk ever evicted (Algorithm R), so old domains stay in
the replay mix against forgetting instead of vanishing first-in-first-out.
"""
from __future__ import annotations

from collections import deque
from typing import Optional, Sequence

import numpy as np

CHUNK = 64  # consecutive positions per chunk: the trainer's window
DEFAULT_CAP_BYTES = 64 << 20
F16_MAX = 65504.0


class Chunk:
    """Up to CHUNK consecutive committed rows of one context."""

    __slots__ = ("hk", "hn", "tokens", "labels", "reply", "n", "ctx", "pos", "serial", "conf")

    def __init__(self, d: int, ctx: int, pos: int, serial: int, size: int = CHUNK):
        self.hk = np.zeros((size, d), dtype=np.float16)
        self.hn = np.zeros((size, d), dtype=np.float16)
        self.tokens = np.zeros(size, dtype=np.int32)
        self.labels = np.zeros(size, dtype=np.int32)
        self.reply = np.zeros(size, dtype=bool)
        self.n, self.ctx, self.pos, self.serial = 0, ctx, pos, serial
        self.conf = None  # the trainer's per-row target confidence, cached

    @property
    def full(self) -> bool:
        return self.n == self.hk.shape[0]

    @property
    def next_pos(self) -> int:
        return self.pos + self.n

    @property
    def nbytes(self) -> int:
        return self.hk.nbytes + self.hn.nbytes + self.tokens.nbytes + self.labels.nbytes + self.reply.nbytes


def _f16(a) -> np.ndarray:
    import mlx.core as mx

    x = np.array(a.astype(mx.float32))
    return np.clip(x, -F16_MAX, F16_MAX).astype(np.float16)


class TokenCounts:
    """Exponentially decayed counts of the tokens the target emitted (half-life in
    tokens): O(1) per token, a full-vocabulary pass only when values are read."""

    def __init__(self, vocab_size: int, half_life: float = 20000.0, values: Optional[np.ndarray] = None):
        self.vocab_size = int(vocab_size)
        self.gamma = 0.5 ** (1.0 / float(half_life))
        self._s = np.zeros(self.vocab_size, dtype=np.float64) if values is None else \
            np.asarray(values, dtype=np.float64).copy()
        if self._s.shape != (self.vocab_size,):
            raise ValueError(f"token counts have shape {self._s.shape}, expected ({self.vocab_size},)")
        self._w = 1.0 / self.gamma  # increment of the next token, relative to _s's scale

    def add(self, tokens: Sequence[int]) -> None:
        for t in tokens:
            t = int(t)
            if 0 <= t < self.vocab_size:
                self._s[t] += self._w
            self._w /= self.gamma
            if self._w > 1e12:  # rescale long before float64 loses anything
                self._s = self.values()
                self._w = 1.0 / self.gamma

    def values(self) -> np.ndarray:
        """Decayed counts: the newest token counts 1, one half-life ago 0.5."""
        return self._s / (self._w * self.gamma)

    def rerank(self, prior: Sequence[int], size: int, always: Sequence[int] = (), min_count: float = 1.0) -> np.ndarray:
        """A ranking of len(prior) ids: `always` (EOS), then up to size // 2 of this user's
        tokens (decayed count >= min_count, most frequent first), then the prior ranking."""
        v = self.values()
        mine = np.nonzero(v >= min_count)[0]
        mine = mine[np.lexsort((mine, -v[mine]))][: max(0, size // 2)]
        prior = [int(t) for t in prior]
        ranked = list(dict.fromkeys([int(t) for t in always] + [int(t) for t in mine] + prior))
        return np.asarray(ranked[: max(len(prior), size)], dtype=np.int32)


class StateBuffer:
    def __init__(self, cap_bytes: int = DEFAULT_CAP_BYTES, replay_fraction: float = 0.25,
                 vocab_size: Optional[int] = None, half_life: float = 20000.0, seed: int = 0,
                 chunk: int = CHUNK):
        if not 0 <= replay_fraction < 1:
            raise ValueError("replay_fraction must be in [0, 1)")
        self.cap_bytes = int(cap_bytes)
        self.replay_fraction = float(replay_fraction)
        self.chunk = int(chunk)
        self.counts = TokenCounts(vocab_size, half_life) if vocab_size else None
        self._rng = np.random.default_rng(seed)
        self._d: Optional[int] = None
        self._recent: deque[Chunk] = deque()
        self._reservoir: list[Chunk] = []
        self._evicted = 0  # chunks that ever left the recent part
        # (start, h_low (T, d), hn (T, d), recorded since the last token feed)
        self._pending: list[tuple[int, object, object, bool]] = []
        self._seq: list[int] = []
        self._prompt_len = 0
        self._committed = 0  # positions below this are committed (for this context)
        self._ctx = 0
        self._serial = 0
        self.rows_seen = 0  # rows ever committed
        self.tokens_seen = 0  # emitted (reply) tokens ever fed

    # -- the runner hook ----------------------------------------------------------------
    def record(self, start: int, h_low, hn) -> None:
        """States of positions start..start+T-1 (h_low, hn: (1, T, d) mx arrays). Kept
        lazily (no device sync here); converted when committed."""
        start = int(start)
        if self._d is None:
            self._d = int(h_low.shape[-1])
        self._cut_pending(start)
        self._pending.append((start, h_low[0], hn[0], True))
        # never hold more pending rows than the cap allows (a reply without token feed)
        limit = max(self.chunk, self.cap_bytes // max(1, self.row_bytes))
        while sum(p[1].shape[0] for p in self._pending) > limit and len(self._pending) > 1:
            self._pending.pop(0)

    def _cut_pending(self, start: int) -> None:
        kept = []
        for s, hk, hn, fresh in self._pending:
            if s >= start:
                continue
            if s + hk.shape[0] > start:
                hk, hn = hk[: start - s], hn[: start - s]
            kept.append((s, hk, hn, fresh))
        self._pending = kept

    # -- the verified token stream -------------------------------------------------------
    def reset_tokens(self, tokens: Sequence[int], prompt_len: Optional[int] = None) -> None:
        """A reply starts; `tokens` is every token so far (prompt + first reply token).
        Positions whose label lies at or after `prompt_len` (default: the last token) are
        reply rows; the rest are prompt rows (the trainer weights them less)."""
        tokens = [int(t) for t in tokens]
        c = 0
        for a, b in zip(self._seq, tokens):
            if a != b:
                break
            c += 1
        if self._committed > max(c - 1, 0):
            # another context: rows after the common prefix belong to the old one
            self._new_context()
            self._committed = max(c - 1, 0)
        # states recorded before this reply's prefill are of the old tokens
        self._pending = [p for p in self._pending if p[3]]
        self._seq = tokens
        self._prompt_len = len(tokens) - 1 if prompt_len is None else int(prompt_len)
        if self.counts is not None:
            self.counts.add(tokens[self._prompt_len:])
        self.tokens_seen += max(0, len(tokens) - self._prompt_len)
        self._commit()
        self._stale()

    def extend_tokens(self, tokens: Sequence[int]) -> None:
        tokens = [int(t) for t in tokens]
        self._seq.extend(tokens)
        if self.counts is not None:
            self.counts.add(tokens)
        self.tokens_seen += len(tokens)
        self._commit()
        self._stale()

    def _new_context(self) -> None:
        self._ctx += 1

    def _commit(self) -> None:
        end = len(self._seq) - 1  # rows below this have their label
        keep = []
        for s, hk, hn, fresh in self._pending:  # sorted, disjoint
            T = hk.shape[0]
            a, b = max(s, self._committed), min(s + T, end)
            if b > a:  # a gap before `a` (positions never recorded) starts a new chunk
                self._add_rows(a, _f16(hk[a - s : b - s]), _f16(hn[a - s : b - s]))
            c = max(a, b)
            if c < s + T:
                keep.append((c, hk[c - s :], hn[c - s :], fresh))
        self._pending = keep

    def _stale(self) -> None:
        """After a token feed: what is still pending is a rejected draft (or unfed); it is
        dropped at the next reply start unless the runner records it again."""
        self._pending = [(s, hk, hn, False) for s, hk, hn, _ in self._pending]

    def _add_rows(self, pos: int, hk: np.ndarray, hn: np.ndarray) -> None:
        i = 0
        while i < hk.shape[0]:
            ch = self._recent[-1] if self._recent else None
            if ch is None or ch.full or ch.ctx != self._ctx or ch.next_pos != pos + i:
                ch = self._open_chunk(pos + i)
            m = min(ch.hk.shape[0] - ch.n, hk.shape[0] - i)
            p = pos + i
            ch.hk[ch.n : ch.n + m] = hk[i : i + m]
            ch.hn[ch.n : ch.n + m] = hn[i : i + m]
            ch.tokens[ch.n : ch.n + m] = self._seq[p : p + m]
            ch.labels[ch.n : ch.n + m] = self._seq[p + 1 : p + 1 + m]
            ch.reply[ch.n : ch.n + m] = np.arange(p + 1, p + 1 + m) >= self._prompt_len
            ch.n += m
            ch.conf = None
            i += m
        self._committed = pos + hk.shape[0]
        self.rows_seen += hk.shape[0]

    def _open_chunk(self, pos: int) -> Chunk:
        ch = Chunk(self._d, self._ctx, pos, self._serial, self.chunk)
        self._serial += 1
        self._recent.append(ch)
        self._evict()
        return ch

    def _evict(self) -> None:
        cap = self.capacity_chunks
        res_cap = int(self.replay_fraction * cap)
        while len(self._recent) + len(self._reservoir) > cap and len(self._recent) > 1:
            old = self._recent.popleft()
            self._evicted += 1
            if len(self._reservoir) < res_cap:
                self._reservoir.append(old)
            else:
                j = int(self._rng.integers(self._evicted))
                if j < res_cap:
                    self._reservoir[j] = old
        while len(self._reservoir) > res_cap:  # a reservoir fuller than the recent part allows
            self._reservoir.pop(int(self._rng.integers(len(self._reservoir))))

    # -- reading -------------------------------------------------------------------------
    @property
    def row_bytes(self) -> int:
        return 2 * 2 * (self._d or 0) + 9

    @property
    def capacity_chunks(self) -> int:
        return max(2, self.cap_bytes // max(1, self.row_bytes * self.chunk))

    @property
    def chunks(self) -> list[Chunk]:
        """Every chunk with rows: the reservoir (oldest history) first, then recent, oldest first."""
        return [c for c in (*self._reservoir, *self._recent) if c.n]

    def newest(self, n: int) -> list[Chunk]:
        return [c for c in list(self._recent)[-n:] if c.n]

    def __len__(self) -> int:
        """Committed rows held."""
        return sum(c.n for c in self.chunks)

    @property
    def nbytes(self) -> int:
        """Bytes of the committed rows' storage (pending states are the runner's arrays)."""
        return sum(c.nbytes for c in (*self._reservoir, *self._recent))

    @property
    def pending_rows(self) -> int:
        return sum(p[1].shape[0] for p in self._pending)

    def summary(self) -> dict:
        return {"rows": len(self), "chunks": len(self.chunks), "bytes": self.nbytes,
                "cap_bytes": self.cap_bytes, "reservoir_chunks": len(self._reservoir),
                "rows_seen": self.rows_seen, "tokens_seen": self.tokens_seen}
