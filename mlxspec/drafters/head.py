"""Self-speculation: draft with the target's first k layers + a compact head.

The draft's layers *are* the target's layers 0..k-1, over the same KV cache
(HeadTargetRunner, head_runner.py). propose() pushes each draft input token through
layers 0..k-1 and the head, then the LM head over a pruned vocabulary. In greedy
decoding the draft is a tree: the head's chain with each step's runner-up as a leaf,
plus tokens copied from the context (lookup.py) and the continuation retrieved from the
target's own earlier replies (reply_store.py), merged as a trie (draft_tree.py).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import mlx.core as mx
import numpy as np

from mlxspec.runtime.layered import LayeredModel, UnsupportedArchitectureError
from mlxspec.drafters.base import Draft, Drafter
from mlxspec.tree import add_branch, best_subtree
from mlxspec.drafters.head_runner import HeadTargetRunner
from mlxspec.drafters.lookup import ContextLookup
from mlxspec.drafters.reply_store import ReplyStore, find_store, load_store
from mlxspec.errors import HeadLoadError
from mlxspec.head.model import DraftHead
from mlxspec.head.vocab import DraftVocab, NeighbourIndex
from mlxspec.sampling import SamplingParams, draft_pick

log = logging.getLogger("mlxspec")

# Drafting stops once the chain's estimated chance of surviving verification (the product
# of the head's confidences) drops below this: a simulation on benchmark replies put the
# best rate at 0.3-0.4 for a draft step costing ~0.12 of a target forward (docs/head.md).
DEFAULT_MIN_CONFIDENCE = 0.3
DEFAULT_TAIL = 1024
DEFAULT_NEIGHBOURS = 4
# Greedy rounds also verify up to this many tokens copied from the context (a second
# branch of the draft tree when they differ from the head's guess).
DEFAULT_LOOKUP_LEN = 5
# ... and up to this many tokens retrieved from the target's own earlier replies (a reply
# store, reply_store.py), in the verification slots the other two leave.
DEFAULT_STORE_LEN = 6
# Greedy draft trees: children per expanded node, nodes expanded per level, nodes verified.
# On the 2-core CPU (1.5B, OpenBLAS) a verification forward of 2-4 tokens costs ~1.15x
# one token, 5-9 tokens ~1.35x, 12 ~1.5x: hence at most 8 nodes after the last verified
# token, and a node costs far less than a draft step (~0.12x).
# Width 2 with one node expanded per level is the chain plus each step's runner-up as a
# leaf: no extra draft steps, only verification slots (measured below, docs/head.md).
DEFAULT_TREE_WIDTH = 2
DEFAULT_TREE_FRONTIER = 1
DEFAULT_TREE_NODES = 8


class HeadDrafter(Drafter):
    name = "head"
    sizes_own_drafts = True  # the confidence stop rule (min_confidence)

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
        lookup_len: int = DEFAULT_LOOKUP_LEN,
        tree_width: int = DEFAULT_TREE_WIDTH,
        tree_frontier: int = DEFAULT_TREE_FRONTIER,
        tree_nodes: int = DEFAULT_TREE_NODES,
        store: Optional[ReplyStore] = None,
        store_len: int = DEFAULT_STORE_LEN,
    ):
        self.model = model
        self.head = head
        self.lm = LayeredModel(model)
        self.min_confidence = min_confidence
        self.lookup_len = lookup_len
        self.lookup = ContextLookup()
        self.store, self.store_len = store, store_len
        self.tree_width, self.tree_frontier, self.tree_nodes = tree_width, tree_frontier, tree_nodes
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
        self._last = []
        self.lookup.reset(prompt)
        self.vocab.reset(self._seq)

    @property
    def _seq(self) -> list[int]:
        """Every token so far (the context lookup keeps it)."""
        return self.lookup.seq

    def extend(self, tokens: list[int]) -> None:
        tokens = [int(t) for t in tokens]
        self.vocab.observe(tokens)
        self.lookup.extend(tokens)

    def commit(self, num_accepted: int, next_token: int) -> None:
        self.commit_path(list(self._last[:num_accepted]), next_token)

    def commit_path(self, accepted: list[int], next_token: int) -> None:
        self._last = []
        self.extend(list(accepted) + [int(next_token)])

    @property
    def vocab_size_in_use(self) -> Optional[int]:
        return self.vocab.size

    def memory_bytes(self) -> int:
        n = self.head.nbytes()
        if self.vocab.mode != "full":
            n += self._core_w.nbytes
        if self._tail_w is not None:
            n += self._tail_w.nbytes
        if self.store is not None:
            n += self.store.nbytes
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
        """Draft logits over the subset slots (core, then tail; empty slots -inf) for a
        predicted feature hn (d,), or for each row of hn (B, d)."""
        x = hn @ self._core_w.T
        if self._tail_w is not None and self.vocab.tail_capacity:
            x = mx.concatenate([x, hn @ self._tail_w.T + self._tail_mask], axis=-1)
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
        if fast_greedy and self.tree_width > 1 and self._runner.supports_tree:
            return self._propose_tree(k)
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
        retrieved = self._retrieved() if fast_greedy and self._runner.supports_tree else []
        if retrieved:
            return self._finish(tokens, list(range(-1, len(tokens) - 1)), retrieved)
        return Draft(tokens=tokens, probs=np.stack(probs) if probs else None)

    def _top_children(self, y: mx.array) -> tuple[np.ndarray, np.ndarray]:
        """The tree_width likeliest draft tokens (full-vocab ids, -1 for an empty slot)
        and their probabilities, for each row of predicted features y (B, d)."""
        sub = self.sub_logits(y)
        w = min(self.tree_width, sub.shape[1])
        top = mx.argpartition(-sub, w - 1, axis=1)[:, :w]
        m = mx.max(sub, axis=1, keepdims=True)
        p = mx.exp(mx.take_along_axis(sub, top, axis=1) - m) / mx.sum(mx.exp(sub - m), axis=1, keepdims=True)
        return self.vocab.sub_to_full[np.array(top)], np.array(p).astype(np.float64)

    def _propose_tree(self, depth_limit: int) -> Draft:
        """EAGLE-2-style dynamic tree (greedy only). A node's score is the product of the
        head's probabilities along its path, an estimate of its chance of being kept.
        Each level feeds the best `tree_frontier` nodes of the newest depth (score at
        least _GROW_MIN_SCORE) through the head at once (one batched pass costs about
        what one token does), each spawning its `tree_width` likeliest children. Growth
        stops when the best new node's score falls below min_confidence (the chain
        rule's threshold). The best nodes by score are verified: `tree_nodes` in all,
        fewer when retrieved tokens (copied, or from the reply store) take some of the
        slots."""
        run = self._runner
        root = self._seq[-1]
        feat = run.last_feature() if self.head.config.feature_input else None
        y = run.draft_step(root, feat)[None]
        fed: list[tuple[float, int, int]] = []  # (score, parent index in fed or -1, token)
        open_: list[tuple[float, int, int]] = []  # children not fed (parents index fed)
        level = [-1]  # the fed nodes whose predictions are the rows of y
        for depth in range(1, depth_limit + 1):
            toks, probs = self._top_children(y)
            born = sorted(((1.0 if parent < 0 else fed[parent][0]) * float(q), parent, int(t))
                          for row, parent in enumerate(level)
                          for t, q in zip(toks[row], probs[row]) if t >= 0)[::-1]
            grow = [] if depth == depth_limit else [
                c for c in born[: self.tree_frontier] if c[0] >= _GROW_MIN_SCORE]
            if not grow or grow[0][0] < self.min_confidence:
                open_ += born
                break
            open_ += born[len(grow):]
            rows = {parent: r for r, parent in enumerate(level)}
            feats = mx.stack([y[rows[p]] for _, p, _ in grow]) if feat is not None else None
            level = list(range(len(fed), len(fed) + len(grow)))
            fed += grow
            y = run.draft_tree_step([t for _, _, t in grow], feats, [-1] + [p + 1 for _, p, _ in fed])
        # Fed nodes first, in feed order, so the verification reuses their lower layers.
        nodes = fed + open_
        retrieved = self._retrieved()
        budget = max(_MIN_HEAD_NODES, self.tree_nodes - max(map(len, retrieved), default=0))
        keep = best_subtree([sc for sc, _, _ in nodes], [p for _, p, _ in nodes], budget)
        index = {old: new for new, old in enumerate(keep)}
        tokens = [nodes[i][2] for i in keep]
        parents = [-1 if nodes[i][1] < 0 else index[nodes[i][1]] for i in keep]
        return self._finish(tokens, parents, retrieved)

    def _retrieved(self) -> list[list[int]]:
        """Guesses that cost no draft step: tokens copied from the context, then the
        reply store's continuation."""
        out = [self.lookup.propose(self.lookup_len)] if self.lookup_len > 0 else []
        if self.store is not None and self.store_len > 0:
            out.append(self.store.propose(self._seq, self.store_len))
        return [b for b in out if b]

    def _finish(self, tokens: list[int], parents: list[int], retrieved: list[list[int]]) -> Draft:
        """The head's guesses plus the retrieved branches, merged as a trie (a branch
        that repeats a guess adds no node); a tree that is a single chain is returned
        as one."""
        own = len(tokens)
        for branch in retrieved:
            tokens, parents = add_branch(tokens, parents, branch, max_new=max(0, self.tree_nodes - len(tokens)))
        linear = parents == list(range(-1, len(tokens) - 1))
        self._last = list(tokens) if linear else []  # commit(n) keeps a prefix of a chain
        return Draft(tokens=tokens, parents=None if linear else parents, own=own)


_GROW_MIN_SCORE = 0.05  # a node less likely than this is not expanded
_MIN_HEAD_NODES = 3  # verification slots the head keeps when retrieved tokens take the rest


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
    lookup_len: Optional[int] = None,
    use_store: bool = True,
) -> HeadDrafter:
    """Load a trained head for `model`, with the model's reply store if it has one.
    Raises HeadLoadError on a missing, corrupt or mismatched head file (the engine then
    falls back to another drafter); an unusable reply store is skipped with a warning."""
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
    store = _load_store(model_dir, lm.vocab_size) if use_store else None
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
            lookup_len=DEFAULT_LOOKUP_LEN if lookup_len is None else lookup_len,
            store=store,
        )
    except ValueError as exc:
        raise HeadLoadError(f"draft head {hf.path.name}: {exc}") from None


def _load_store(model_dir: Path, vocab_size: int) -> Optional[ReplyStore]:
    path = find_store(model_dir)
    if path is None:
        return None
    try:
        return load_store(path, vocab_size)
    except ValueError as exc:
        log.warning("%s; drafting without it", exc)
        return None


def bench_variants(model, tokenizer, model_dir: Path) -> dict:
    """The trained head with each vocabulary mode, for `mlxspec bench`: the full LM head,
    the static frequency-ranked core, and the dynamic core + context tail (the default),
    plus the default without the retrieved branches (what the head alone does) and, where
    the model has a reply store, without it."""
    out = {}
    variants = [(f"head {m}-vocab", m, None, True) for m in ("full", "static", "dynamic")]
    if find_store(model_dir) is not None:
        variants.append(("head dynamic-vocab, no reply store", "dynamic", None, False))
    variants.append(("head dynamic-vocab, no copy or store", "dynamic", 0, False))
    for label, mode, lookup_len, use_store in variants:
        try:
            out[label] = load_head_drafter(model, tokenizer, model_dir, vocab_mode=mode, lookup_len=lookup_len,
                                           use_store=use_store)
        except HeadLoadError as exc:
            log.warning("%s; skipping the head drafter in the benchmark", exc)
            return {}
    return out
