"""Draft trees. Every draft is a tree over flat lists: node i has token tokens[i] and
parent parents[i] < i (-1: a child of the root, the last verified token). A chain is
the tree whose parents are -1, 0, 1, ...

Each node also says how it was proposed, for exact sampling: q[i] is the distribution
its token was drawn from (a full-vocabulary float64 row), or None when the token is a
deterministic function of the context (a greedy guess, a copied or retrieved token:
a point mass). `guessed` counts the nodes that cost a draft step (the rest were free).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

# Nodes verified per round, at most: a target forward of ~9 tokens costs little more than
# one on a CPU with a fast BLAS (docs/head.md). Where the measured curve jumps below that
# size the engine verifies fewer (costs.CostModel.tree_budget).
DEFAULT_TREE_NODES = 8


def chain_parents(n: int) -> list[int]:
    return list(range(-1, n - 1))


@dataclass
class DraftTree:
    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    q: list[Optional[np.ndarray]] = field(default_factory=list)
    guessed: int = 0

    def __post_init__(self):
        if not self.q:
            self.q = [None] * len(self.tokens)
        if not (len(self.tokens) == len(self.parents) == len(self.q)):
            raise ValueError("a draft tree needs one parent and one q per token")

    @classmethod
    def chain(cls, tokens: Sequence[int], q: Optional[Sequence] = None, guessed: Optional[int] = None) -> "DraftTree":
        tokens = [int(t) for t in tokens]
        rows = list(q) if q is not None else [None] * len(tokens)
        return cls(tokens, chain_parents(len(tokens)), rows, len(tokens) if guessed is None else guessed)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def is_chain(self) -> bool:
        return self.parents == chain_parents(len(self.tokens))

    @property
    def depth(self) -> int:
        return max(depths(self.parents), default=0)

    def add_branch(self, branch: Sequence[int], max_new: int = 1 << 30) -> "DraftTree":
        """The tree with a copied token sequence from the root merged in as a trie (a
        prefix it shares with the tree adds no node); its new nodes are point masses."""
        tokens, parents = add_branch(self.tokens, self.parents, [int(t) for t in branch], max_new)
        return DraftTree(tokens, parents, self.q + [None] * (len(tokens) - len(self.tokens)), self.guessed)

    def matched(self, tokens: Sequence[int]) -> int:
        """How many of `tokens` (from the first) the tree holds as a path from its root."""
        kids, at, n = children_of(self.tokens, self.parents), -1, 0
        for t in tokens:
            at = kids.get(at, {}).get(int(t))
            if at is None:
                break
            n += 1
        return n

    def first_chain(self) -> "DraftTree":
        """The chain that follows each node's first child (for runners without trees)."""
        keep, at = [], -1
        while True:
            nxt = next((i for i, p in enumerate(self.parents) if p == at), None)
            if nxt is None:
                break
            keep.append(nxt)
            at = nxt
        return DraftTree.chain([self.tokens[i] for i in keep], [self.q[i] for i in keep],
                               min(self.guessed, len(keep)))

    def cut(self, max_depth: int, max_nodes: int) -> "DraftTree":
        """Without nodes deeper than max_depth and past the first max_nodes that remain
        (a node is kept only with its parent)."""
        keep, index = [], {}
        for i, d in enumerate(depths(self.parents)):
            p = self.parents[i]
            if d <= max_depth and (p < 0 or p in index) and len(keep) < max_nodes:
                index[i] = len(keep)
                keep.append(i)
        if len(keep) == len(self.tokens):
            return self
        guessed = min(self.guessed, len(keep))
        return DraftTree([self.tokens[i] for i in keep],
                         [-1 if self.parents[i] < 0 else index[self.parents[i]] for i in keep],
                         [self.q[i] for i in keep], guessed)


def best_subtree(scores: list[float], parents: list[int], budget: int) -> list[int]:
    """Indices (ascending) of the `budget` best-scoring nodes. A child's score is at
    most its parent's, so the best nodes include their ancestors; a float tie that
    would orphan a node drops it."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    chosen = set(order[:budget])
    for i in sorted(chosen):
        if parents[i] >= 0 and parents[i] not in chosen:
            chosen.discard(i)
    return sorted(chosen)


def children_of(tokens: Sequence[int], parents: Sequence[int]) -> dict[int, dict[int, int]]:
    """parent index (-1: the root) -> {token: index of the first child with that token},
    children in index order."""
    children: dict[int, dict[int, int]] = {}
    for i, (t, p) in enumerate(zip(tokens, parents)):
        children.setdefault(int(p), {}).setdefault(int(t), i)
    return children


def add_branch(tokens: list[int], parents: list[int], branch: list[int],
               max_new: int = 1 << 30) -> tuple[list[int], list[int]]:
    """Insert a token sequence that starts at the root into a tree (a trie: a prefix it
    shares with the tree is not repeated), at most `max_new` new nodes of it. New nodes
    go after the existing ones."""
    tokens, parents = list(tokens), list(parents)
    children = children_of(tokens, parents)
    at = -1
    for tok in branch:
        i = children.get(at, {}).get(tok)
        if i is None:
            if max_new <= 0:
                break
            max_new -= 1
            tokens.append(tok)
            parents.append(at)
            i = len(tokens) - 1
            children.setdefault(at, {})[tok] = i
        at = i
    return tokens, parents


def depths(parents: Sequence[int]) -> list[int]:
    """Depth of each node below the root (parents[i] < i, -1 for the root's children)."""
    depth: list[int] = []
    for p in parents:
        depth.append(1 if p < 0 else depth[p] + 1)
    return depth

