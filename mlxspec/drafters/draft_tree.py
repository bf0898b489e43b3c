"""Draft trees as flat lists: tokens[i] with parents[i] < i (-1: a child of the root,
the last verified token)."""
from __future__ import annotations


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


def add_branch(tokens: list[int], parents: list[int], branch: list[int],
                max_new: int = 1 << 30) -> tuple[list[int], list[int]]:
    """Insert a token sequence that starts at the root into a tree (a trie: a prefix it
    shares with the tree is not repeated), at most `max_new` new nodes of it. New nodes
    go after the existing ones."""
    tokens, parents = list(tokens), list(parents)
    children: dict[int, dict[int, int]] = {}
    for i, (t, p) in enumerate(zip(tokens, parents)):
        children.setdefault(p, {}).setdefault(t, i)
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
