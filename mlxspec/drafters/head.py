"""Self-speculation: draft with the target's first k layers + a compact head.

The draft's layers *are* the target's layers 0..k-1, over the same KV cache. So:
- propose() pushes each draft input token through layers 0..k-1 (writing their cache)
  and the head (its own one-block cache), then the LM head over a pruned vocabulary;
- the target runner's forward() reuses the layer-k hidden states the draft already
  computed for those tokens and runs only layers k..L-1 on them (layers 0..k-1 run only
  for tokens the draft has not seen: the last drafted token, plain steps, prefill);
- trim() rewinds every layer and the head's cache to the same length.

Cache layout, with `length` = tokens in layers k..L-1 (the verified sequence S[:-1]):
    layers 0..k-1 and head  hold `low_len` >= length tokens
    positions length..low_len-1 are "pending": their tokens and layer-k hidden states
    are kept here and consumed by the next forward() if it starts with the same tokens.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import mlx.core as mx
import numpy as np
from mlx_lm.models.base import create_attention_mask
from mlx_lm.models.cache import KVCache

from mlxspec.archs.layered import LayeredModel, UnsupportedArchitectureError
from mlxspec.drafters.base import Draft, Drafter
from mlxspec.errors import HeadLoadError
from mlxspec.head.model import DraftHead
from mlxspec.head.vocab import DraftVocab, NeighbourIndex
from mlxspec.sampling import SamplingParams, draft_pick
from mlxspec.target import TargetRunner

log = logging.getLogger("mlxspec")

# Drafting stops once the chain's estimated chance of surviving verification (the product
# of the head's confidences) drops below this: a simulation on benchmark replies put the
# best rate at 0.3-0.4 for a draft step costing ~0.12 of a target forward (docs/head.md).
DEFAULT_MIN_CONFIDENCE = 0.3
DEFAULT_TAIL = 1024
DEFAULT_NEIGHBOURS = 4


class HeadTargetRunner(TargetRunner):
    """Target runner whose layers 0..k-1 and cache are shared with the draft head."""

    def __init__(self, model, head: DraftHead):
        super().__init__(model)
        self.lm = LayeredModel(model)
        self.head = head
        self.k = head.config.exit_layer
        self.head_cache = KVCache()
        self.low_len = 0  # tokens in layers 0..k-1 and in the head's cache
        self._pend_tokens: list[int] = []
        self._pend_h: list[mx.array] = []
        # final normalised hidden states of the last forward (feature-input heads)
        self._feats: Optional[mx.array] = None
        self._feats_base = 0
        self.reused = 0  # tokens whose lower layers forward() did not recompute

    # -- lower half (layers 0..k-1 + head) ---------------------------------------------
    def _lower(self, tokens: list[int]) -> mx.array:
        h = self.lm.run_layers(self.lm.embed(tokens), 0, self.k, self.cache)
        self.low_len += len(tokens)
        return h

    def _rewind_lower(self, n: int) -> None:
        if n <= 0:
            return
        for c in self.cache[: self.k]:
            c.trim(n)
        self.head_cache.trim(n)
        self.low_len -= n

    def feature_at(self, pos: int) -> Optional[mx.array]:
        """The target's final normalised hidden state at `pos`, if the last forward
        computed it (the feature a feature-input head drafts the next token from)."""
        i = pos - self._feats_base
        if self._feats is None or not 0 <= i < self._feats.shape[0]:
            return None
        return self._feats[i]

    def last_feature(self) -> Optional[mx.array]:
        return self.feature_at(self.length - 1)

    def draft_step(self, token: int, feat: Optional[mx.array] = None) -> mx.array:
        """Feed one token (at position low_len) through layers 0..k-1 and the head, the
        head given `feat` (the previous position's final hidden state, true or
        predicted); return the head's predicted final normalised hidden state (d,)."""
        h = self._lower([int(token)])
        f = None if feat is None else feat.reshape(1, 1, -1)
        y = self.head(h, f, None, self.head_cache)
        self._pend_tokens.append(int(token))
        self._pend_h.append(h)
        return y[0, -1]

    # -- TargetRunner ---------------------------------------------------------------
    def forward(self, tokens: list[int], last_only: bool = False) -> mx.array:
        tokens = [int(t) for t in tokens]
        start = self.length
        j = 0
        n_pend = len(self._pend_tokens)
        while j < min(n_pend, len(tokens)) and self._pend_tokens[j] == tokens[j]:
            j += 1
        self._rewind_lower(n_pend - j)
        parts = self._pend_h[:j]
        self._pend_tokens, self._pend_h = [], []
        if j < len(tokens):
            parts.append(self._lower(tokens[j:]))
        h_low = parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=1)
        hn = self.lm.norm(self.lm.run_layers(h_low, self.k, self.lm.num_layers, self.cache))
        # The head's cache is rebuilt over these tokens from the verified states (the
        # draft wrote its entries from predicted features).
        self.head_cache.trim(self.head_cache.offset - start)
        feat = None
        if self.head.config.feature_input:
            prev = self.feature_at(start - 1)
            prev = mx.zeros_like(hn[:, :1]) if prev is None else prev.reshape(1, 1, -1)
            feat = mx.concatenate([prev, hn[:, :-1]], axis=1)
        self.head(h_low, feat, create_attention_mask(h_low, self.head_cache), self.head_cache)
        self._feats, self._feats_base = hn[0], start
        out = self.lm.logits(hn[:, -1:] if last_only else hn)[0].astype(mx.float32)
        mx.eval(out, self._feats, self.head_cache.keys, self.head_cache.values)
        self.reused += j
        self.length += len(tokens)
        return out

    def _hidden_last(self, tokens: list[int], project: bool = False) -> mx.array:
        # Prefill must fill the head's cache too, so it goes through forward().
        return self.forward(tokens, last_only=True)[-1]

    def trim(self, n: int) -> None:
        if n <= 0:
            return
        n = min(n, self.length)
        new = self.length - n
        for c in self.cache[self.k :]:
            c.trim(n)
        if self.low_len > new:
            self._rewind_lower(self.low_len - new)
        self._pend_tokens, self._pend_h = [], []
        self.length = new


class HeadDrafter(Drafter):
    name = "head"

    def __init__(
        self,
        model,
        head: DraftHead,
        core_ids,
        vocab_mode: str = "dynamic",
        tail_capacity: int = DEFAULT_TAIL,
        num_neighbours: int = DEFAULT_NEIGHBOURS,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        eos_ids=(),
        label: Optional[str] = None,
    ):
        self.model = model
        self.head = head
        self.lm = LayeredModel(model)
        self.min_confidence = min_confidence
        self.name = label or f"head@{head.config.exit_layer}"
        V = self.lm.vocab_size
        core = [int(t) for t in eos_ids if 0 <= int(t) < V] + [int(t) for t in core_ids]
        core = list(dict.fromkeys(core))
        nb = None
        if vocab_mode == "dynamic" and num_neighbours > 0:
            exclude = np.zeros(V, dtype=bool)
            exclude[np.asarray(core, dtype=np.int64)] = True
            nb = NeighbourIndex(self.lm.lm_head_weight, num_neighbours, exclude=exclude)
        self.vocab = DraftVocab(V, core, mode=vocab_mode, tail_capacity=tail_capacity, neighbours=nb)
        W = self.lm.lm_head_weight
        self._core_w = W if vocab_mode == "full" else W[mx.array(self.vocab.core)]
        mx.eval(self._core_w)
        self._tail_w = None
        self._tail_mask = None
        self._tail_version = -1
        self._runner: Optional[HeadTargetRunner] = None
        self._seq: list[int] = []
        self._last: list[int] = []

    # -- Drafter interface ------------------------------------------------------------
    def make_target_runner(self, model) -> HeadTargetRunner:
        if model is not self.model:
            raise ValueError("this head drafter was built for another model object")
        return HeadTargetRunner(model, self.head)

    def reset(self, prompt: list[int], target) -> None:
        if not isinstance(target, HeadTargetRunner):
            raise TypeError("the head drafter needs the runner from its make_target_runner")
        self._runner = target
        self._seq = list(prompt)
        self._last = []
        self.vocab.reset(self._seq)

    def extend(self, tokens: list[int]) -> None:
        self._seq.extend(int(t) for t in tokens)
        self.vocab.observe(tokens)

    def commit(self, num_accepted: int, next_token: int) -> None:
        new = list(self._last[:num_accepted]) + [int(next_token)]
        self._last = []
        self._seq.extend(new)
        self.vocab.observe(new)

    @property
    def vocab_size_in_use(self) -> Optional[int]:
        return self.vocab.size

    def memory_bytes(self) -> int:
        n = self.head.nbytes()
        if self.vocab.mode != "full":
            n += self._core_w.nbytes
        if self._tail_w is not None:
            n += self._tail_w.nbytes
        return n

    # -- drafting ---------------------------------------------------------------------
    def _refresh_tail(self) -> None:
        if self.vocab.tail_capacity == 0 or self._tail_version == self.vocab.version:
            return
        ids = self.vocab.tail_ids()
        self._tail_w = self.lm.lm_head_weight[mx.array(np.maximum(ids, 0))]
        self._tail_mask = mx.array(np.where(ids >= 0, 0.0, -np.inf).astype(np.float32))
        self._tail_version = self.vocab.version

    def sub_logits(self, hn: mx.array) -> mx.array:
        """Draft logits over the subset slots (core, then tail; empty slots -inf)."""
        x = self._core_w @ hn
        if self._tail_w is not None and self.vocab.tail_capacity:
            x = mx.concatenate([x, self._tail_w @ hn + self._tail_mask])
        return x.astype(mx.float32)

    def full_logits(self, sub: np.ndarray) -> np.ndarray:
        """Scatter subset logits into the full vocabulary (-inf outside the subset)."""
        full = np.full(self.lm.vocab_size, -np.inf, dtype=np.float64)
        slots = self.vocab.sub_to_full[: sub.shape[0]]
        ok = slots >= 0
        full[slots[ok]] = sub[ok]
        return full

    def propose(self, k: int, params: SamplingParams, rng: np.random.Generator) -> Draft:
        if self._runner is None:
            raise RuntimeError("propose() before reset()")
        self._refresh_tail()
        tokens: list[int] = []
        probs: list[np.ndarray] = []
        context = list(self._seq)
        tok = self._seq[-1]
        feat = self._runner.last_feature() if self.head.config.feature_input else None
        fast_greedy = params.greedy and (params.repetition_penalty in (None, 1.0))
        chain = 1.0  # estimated probability that every token so far is accepted
        for _ in range(k):
            feat = self._runner.draft_step(tok, feat)
            sub = self.sub_logits(feat)
            if fast_greedy:
                m = mx.max(sub)
                j, conf = mx.argmax(sub), 1.0 / mx.sum(mx.exp(sub - m))
                mx.eval(j, conf)
                tok = int(self.vocab.sub_to_full[int(j.item())])
                confidence = float(conf.item())
            else:
                tok, q, confidence = draft_pick(self.full_logits(np.array(sub).astype(np.float64)),
                                                context, params, rng)
                if q is not None:
                    probs.append(q)
            tokens.append(tok)
            context.append(tok)
            chain *= confidence
            if chain < self.min_confidence:
                break
        self._last = tokens
        return Draft(tokens=tokens, probs=np.stack(probs) if probs else None)


# -- loading -------------------------------------------------------------------------
def find_heads(model_dir: Path) -> list[Path]:
    """Trained heads of a model: models/<model>/heads/*.safetensors, newest first."""
    from mlxspec.head.io import heads_dir

    d = heads_dir(Path(model_dir))
    if not d.is_dir():
        return []
    found = [p for p in d.glob("*.safetensors") if not p.name.startswith(".")]
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name), reverse=True)


def build_head(model, hf) -> DraftHead:
    """A DraftHead for `model` with the weights of a read head file."""
    cfg = hf.config
    try:
        head = DraftHead(model, cfg)
        head.load_weights(list(hf.weights.items()), strict=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise HeadLoadError(f"draft head {hf.path.name} does not fit this model ({exc})") from None
    head.set_dtype(mx.float32)
    mx.eval(head.parameters())
    head.eval()
    return head


def load_head_drafter(
    model,
    tokenizer,
    model_dir: Path,
    head_path: Optional[Path] = None,
    vocab_mode: Optional[str] = None,
    vocab_size: Optional[int] = None,
    tail_capacity: Optional[int] = None,
    min_confidence: Optional[float] = None,
) -> HeadDrafter:
    """Load a trained head for `model`. Raises HeadLoadError on a missing, corrupt or
    mismatched head file (the engine then falls back to another drafter)."""
    from mlxspec.head.io import check_fingerprint, read_head

    if head_path is None:
        heads = find_heads(model_dir)
        if not heads:
            raise HeadLoadError(f"no draft head under {Path(model_dir) / 'heads'}")
        head_path = heads[0]
    hf = read_head(Path(head_path))
    try:
        lm = LayeredModel(model)
    except UnsupportedArchitectureError as exc:
        raise HeadLoadError(str(exc)) from None
    check_fingerprint(hf, lm.fingerprint())
    if not 1 <= hf.config.exit_layer < lm.num_layers:
        raise HeadLoadError(f"draft head {hf.path.name} has an invalid exit layer {hf.config.exit_layer}")
    if hf.core_ids.size and (hf.core_ids.min() < 0 or hf.core_ids.max() >= lm.vocab_size):
        raise HeadLoadError(f"draft head {hf.path.name} is corrupt (token ids out of range)")
    head = build_head(model, hf)
    s = hf.settings
    mode = vocab_mode or s.get("vocab_mode", "dynamic")
    n = int(vocab_size or s.get("vocab", len(hf.core_ids)))
    eos = list(getattr(tokenizer, "eos_token_ids", None) or []) if tokenizer is not None else []
    try:
        return HeadDrafter(
            model,
            head,
            hf.core_ids[:n],
            vocab_mode=mode,
            tail_capacity=DEFAULT_TAIL if tail_capacity is None else tail_capacity,
            min_confidence=DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence,
            eos_ids=eos,
            label=f"head:{hf.path.stem}",
        )
    except ValueError as exc:
        raise HeadLoadError(f"draft head {hf.path.name}: {exc}") from None


def bench_variants(model, tokenizer, model_dir: Path) -> dict:
    """The trained head with each vocabulary mode, for `mlxspec bench`: the full LM head,
    the static frequency-ranked core, and the dynamic core + context tail (the default)."""
    out = {}
    for mode in ("full", "static", "dynamic"):
        try:
            out[f"head {mode}-vocab"] = load_head_drafter(model, tokenizer, model_dir, vocab_mode=mode)
        except HeadLoadError as exc:
            log.warning("%s; skipping the head drafter in the benchmark", exc)
            return {}
    return out
