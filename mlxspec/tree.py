"""Draft trees as flat lists: tokens[i] with parents[i] < i (-1: a child of the root,
the last verified token)."""
from __future__ import annotations

from typing import Sequence


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
    """parent index (-1: the root) -> {token: index of the first child with that token}."""
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


def within_depth(tokens: list[int], parents, limit: int, own: int):
    """The draft without tokens deeper than `limit` below the root (a chain: its first
    `limit` tokens); a tree that is left a chain becomes one. Also returns how many of
    the kept tokens are among the first `own`."""
    if parents is None:
        kept = tokens[: max(limit, 0)]
        return kept, None, min(own, len(kept))
    keep, new_index = [], {}
    for i, d in enumerate(depths(parents)):
        p = parents[i]
        if d <= limit and (p < 0 or p in new_index):
            new_index[i] = len(keep)
            keep.append(i)
    kept_parents = [-1 if parents[i] < 0 else new_index[parents[i]] for i in keep]
    kept_tokens = [tokens[i] for i in keep]
    own = sum(1 for i in keep if i < own)
    if kept_parents == list(range(-1, len(keep) - 1)):
        return kept_tokens, None, own
    return kept_tokens, kept_parents, own
