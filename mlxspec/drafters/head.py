"""Self-speculation: draft with the target's first k layers + a compact head.

The draft's layers *are* the target's layers 0..k-1, over the same KV cache
(HeadTargetRunner, head_runner.py). propose() pushes each draft input token through
layers 0..k-1 and the head, then the LM head over a pruned vocabulary. In greedy
decoding the draft is a tree: the head's chain with each step's runner-up as a leaf
(tree_width 2, tree_frontier 1), or an EAGLE-2-style dynamic tree; copied and retrieved
branches are added by the engine's composition (compose.py), not here.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import mlx.core as mx
import numpy as np

from mlxspec.drafters.base import Drafter
from mlxspec.drafters.head_runner import HeadTargetRunner
from mlxspec.errors import HeadLoadError
from mlxspec.head.model import DraftHead, make_head
from mlxspec.head.vocab import DraftVocab, NeighbourIndex
from mlxspec.runtime.layered import LayeredModel, UnsupportedArchitectureError
from mlxspec import device_sampling as dev
from mlxspec.runtime.host import to_host
from mlxspec.sampling import SamplingParams, greedy_view
from mlxspec.tree import DEFAULT_TREE_NODES, DraftTree, best_subtree

log = logging.getLogger("mlxspec")

# Drafting stops once the chain's estimated chance of surviving verification (the product
# of the head's confidences) drops below this: a simulation on benchmark replies put the
# best rate at 0.3-0.4 for a draft step costing ~0.12 of a target forward (docs/head.md).
DEFAULT_MIN_CONFIDENCE = 0.3
DEFAULT_TAIL = 1024
DEFAULT_NEIGHBOURS = 4
# Greedy draft trees: children per expanded node, nodes expanded per level (nodes verified:
# mlxspec.tree.DEFAULT_TREE_NODES).
# Width 2 with one node expanded per level is the chain plus each step's runner-up as a
# leaf: no extra draft steps, only verification slots (docs/head.md).
DEFAULT_TREE_WIDTH = 2
DEFAULT_TREE_FRONTIER = 1


class HeadDrafter(Drafter):
    name = "head"
    greedy_q = False  # True: q rows (and chains) in greedy decoding (relaxed.request_draft_rows)

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
        tree_width: int = DEFAULT_TREE_WIDTH,
        tree_frontier: int = DEFAULT_TREE_FRONTIER,
        tree_nodes: int = DEFAULT_TREE_NODES,
        root_width: Optional[int] = None,
    ):
        self.model = model
        self.head = head
        self.lm = LayeredModel(model)
        self.min_confidence = min_confidence
        self.tree_width, self.tree_frontier, self.tree_nodes = tree_width, tree_frontier, tree_nodes
        # children of the root: where a head's top-1 misses, its top-4 often holds the token
        self.root_width = tree_width if root_width is None else max(tree_width, int(root_width))
        self.name = label or f"head@{head.config.exit_layer}"
        V = self.lm.vocab_size
        core = [int(t) for t in eos_ids if 0 <= int(t) < V] + [int(t) for t in core_ids]
        core = list(dict.fromkeys(core))
        nb = None
        if vocab_mode == "dynamic" and num_neighbours > 0:
            exclude = np.zeros(V, dtype=bool)
            exclude[np.asarray(core, dtype=np.int64)] = True
            nb = NeighbourIndex(self.lm.lm_head_view(), num_neighbours, exclude=exclude)
        self.vocab = DraftVocab(V, core, mode=vocab_mode, tail_capacity=tail_capacity, neighbours=nb)
        # any weight format: rows of the LM head gathered once (quantized ones too)
        self._core = None if vocab_mode == "full" else self.lm.lm_head_rows(self.vocab.core)
        self._tail = None
        self._tail_mask = None
        self._tail_version = -1
        self._runner: Optional[HeadTargetRunner] = None
        self._seq: list[int] = []  # every token so far

    # -- Drafter interface ------------------------------------------------------------
    def make_runner(self, model) -> HeadTargetRunner:
        if model is not self.model:
            raise ValueError("this head drafter was built for another model object")
        return HeadTargetRunner(model, self.head)

    def reset(self, tokens: list[int], runner) -> None:
        if not isinstance(runner, HeadTargetRunner):
            raise TypeError("the head drafter needs the runner from its make_runner")
        self._runner = runner
        self._seq = [int(t) for t in tokens]
        self.vocab.reset(self._seq)

    def extend(self, tokens: list[int]) -> None:
        tokens = [int(t) for t in tokens]
        self.vocab.observe(tokens)
        self._seq.extend(tokens)

    @property
    def vocab_size_in_use(self) -> Optional[int]:
        return self.vocab.size

    def memory_bytes(self) -> int:
        n = self.head.nbytes()
        if self._core is not None:
            n += self._core.nbytes
        if self._tail is not None:
            n += self._tail.nbytes
        return n

    # -- drafting ---------------------------------------------------------------------
    def _refresh_tail(self) -> None:
        if self.vocab.tail_capacity == 0 or self._tail_version == self.vocab.version:
            return
        ids = self.vocab.tail_ids()
        self._tail = self.lm.lm_head_rows(np.maximum(ids, 0))
        self._tail_mask = mx.array(np.where(ids >= 0, 0.0, -np.inf).astype(np.float32))
        self._tail_version = self.vocab.version

    def sub_logits(self, hn: mx.array) -> mx.array:
        """Draft logits over the subset slots (core, then tail; empty slots -inf) for a
        predicted feature hn (d,), or for each row of hn (B, d)."""
        x = self.lm.logits(hn) if self._core is None else self._core(hn)
        if self._tail is not None and self.vocab.tail_capacity:
            x = mx.concatenate([x, self._tail(hn) + self._tail_mask], axis=-1)
        return x.astype(mx.float32)

    def propose(self, k: int, params: SamplingParams, rng: np.random.Generator,
                max_nodes: Optional[int] = None) -> DraftTree:
        if self._runner is None:
            raise RuntimeError("propose() before reset()")
        self._refresh_tail()
        fast_greedy = params.greedy and (params.repetition_penalty in (None, 1.0)) and not self.greedy_q
        if fast_greedy and self.tree_width > 1 and self._runner.supports_tree:
            return self._propose_tree(k, self.tree_nodes if max_nodes is None else max_nodes)
        tokens: list[int] = []
        probs: list[Optional[np.ndarray]] = []
        context = list(self._seq)
        tok = self._seq[-1]
        feat = self._runner.last_feature() if self.head.config.feature_input else None
        chain = 1.0  # estimated probability that every token so far is accepted
        for _ in range(k):
            feat = self._runner.draft_step(tok, feat)
            sub = self.sub_logits(feat)
            if fast_greedy:
                j, confidence = dev.read_pick(mx.argmax(sub), 1.0 / mx.sum(mx.exp(sub - mx.max(sub))))
                tok, q = int(self.vocab.sub_to_full[j]), None
            else:
                full = dev.scatter(sub, self.vocab.sub_to_full, self.lm.vocab_size)
                tok, q, confidence = dev.draft_pick(full, context, params, rng)
                if q is None and self.greedy_q:  # relaxed greedy verification blends q
                    q = dev.probs_rows(full[None], [context], greedy_view(params))[0][0]
                tok, confidence = dev.read_pick(tok, confidence)  # the step's one read
            tokens.append(tok)
            probs.append(q)
            context.append(tok)
            chain *= confidence
            if chain < self.min_confidence:
                break
        return DraftTree.chain(tokens, probs)

    def _top_children(self, y: mx.array, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The `width` likeliest draft tokens (full-vocab ids, -1 for an empty slot) and
        their probabilities, for each row of predicted features y (B, d)."""
        sub = self.sub_logits(y)
        w = min(width, sub.shape[1])
        top = mx.argpartition(-sub, w - 1, axis=1)[:, :w]
        m = mx.max(sub, axis=1, keepdims=True)
        p = mx.exp(mx.take_along_axis(sub, top, axis=1) - m) / mx.sum(mx.exp(sub - m), axis=1, keepdims=True)
        top, p = to_host(top, p)
        return self.vocab.sub_to_full[top], p.astype(np.float64)

    def _propose_tree(self, depth_limit: int, budget: int) -> DraftTree:
        """EAGLE-2-style dynamic tree (greedy only). A node's score is the product of the
        head's probabilities along its path, an estimate of its chance of being kept.
        Each level feeds the best `tree_frontier` nodes of the newest depth (score at
        least _GROW_MIN_SCORE) through the head at once (one batched pass costs about
        what one token does), each spawning its `tree_width` likeliest children. Growth
        stops when the best new node's score falls below min_confidence (the chain
        rule's threshold). The `budget` best nodes by score are verified."""
        run = self._runner
        root = self._seq[-1]
        feat = run.last_feature() if self.head.config.feature_input else None
        y = run.draft_step(root, feat)[None]
        fed: list[tuple[float, int, int]] = []  # (score, parent index in fed or -1, token)
        open_: list[tuple[float, int, int]] = []  # children not fed (parents index fed)
        level = [-1]  # the fed nodes whose predictions are the rows of y
        passes = 1  # batched passes through the lower layers and the head
        for depth in range(1, depth_limit + 1):
            toks, probs = self._top_children(y, self.root_width if depth == 1 else self.tree_width)
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
            passes += 1
        # Fed nodes first, in feed order, so the verification reuses their lower layers.
        nodes = fed + open_
        keep = best_subtree([sc for sc, _, _ in nodes], [p for _, p, _ in nodes], max(1, budget))
        index = {old: new for new, old in enumerate(keep)}
        tokens = [nodes[i][2] for i in keep]
        parents = [-1 if nodes[i][1] < 0 else index[nodes[i][1]] for i in keep]
        return DraftTree(tokens, parents, guessed=passes)


_GROW_MIN_SCORE = 0.05  # a node less likely than this is not expanded


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
        head = make_head(model, cfg)
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
    mismatched head file (the caller then falls back to another drafter)."""
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
