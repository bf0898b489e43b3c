"""A drafter with branch sources: the drafter's own guesses plus tokens copied from the
context (lookup.py) and retrieved from the target's earlier replies (reply_store.py),
merged into one draft tree (a trie: a branch that repeats a guess adds no node).

The branches cost no draft step; they take verification slots, so they are asked for
first and the drafter's own tree gets the slots they leave (at least _MIN_OWN_NODES).
With no drafter of its own the composition is prompt-lookup decoding (`--draft lookup`).
"""
from __future__ import annotations

from typing import Optional, Sequence

from mlxspec.drafters.base import Drafter
from mlxspec.tree import DEFAULT_TREE_NODES, DraftTree

_MIN_OWN_NODES = 3


class Composite(Drafter):
    def __init__(self, primary: Optional[Drafter], branches: Sequence[Drafter],
                 max_nodes: int = DEFAULT_TREE_NODES, label: Optional[str] = None):
        if primary is None and not branches:
            raise ValueError("a composite drafter needs a drafter or a branch source")
        self.primary = primary
        self.branches = list(branches)
        self.max_nodes = max_nodes
        parts = ([primary.name] if primary else []) + [b.name for b in self.branches]
        self.name = label or "+".join(parts)
        self._copies = None  # branches found for the current context, reused by the next draft
        self._own = None  # the drafter's own tree in the current draft (before the copies joined)

    @property
    def parts(self) -> list[Drafter]:
        return ([self.primary] if self.primary else []) + self.branches

    def make_runner(self, model):
        return self.primary.make_runner(model) if self.primary else super().make_runner(model)

    def reset(self, tokens, runner) -> None:
        self._copies = self._own = None
        for d in self.parts:
            d.reset(tokens, runner)

    def extend(self, tokens) -> None:
        self._copies = self._own = None
        for d in self.parts:
            d.extend(tokens)

    def accept(self, kept, next_token) -> None:
        self._copies = self._own = None
        for d in self.parts:
            d.accept(kept, next_token)

    def end_reply(self, stats, seconds) -> None:
        for d in self.parts:
            d.end_reply(stats, seconds)

    def last_catch_up_s(self) -> float:
        return self.primary.last_catch_up_s() if self.primary is not None else 0.0

    def step_cost_hint(self, target_bytes: int):
        return self.primary.step_cost_hint(target_bytes) if self.primary is not None else None

    def acceptance_hint(self):
        return self.primary.acceptance_hint() if self.primary is not None else None

    def propose(self, k, params, rng, max_nodes: Optional[int] = None) -> DraftTree:
        budget = self.max_nodes if max_nodes is None else max_nodes
        found = self._found(k, params, rng)
        if self.primary is None:
            tree = DraftTree()
        else:
            own = max(_MIN_OWN_NODES, budget - max(map(len, found), default=0))
            tree = self._own = self.primary.propose(k, params, rng, max_nodes=own)
        return self._merge(tree, found, budget)

    def last_sources(self):
        """(the drafter's own tree, the longest copied branch) of the current draft, each
        None where there was none: what each source guessed, to be measured apart."""
        return self._own, max(self._copies or [], key=len, default=None)

    @property
    def has_free_branches(self) -> bool:
        """Whether propose_free can offer copies apart from the drafter's own guesses."""
        return self.primary is not None and bool(self.branches)

    def propose_free(self, k, params, rng, max_nodes: Optional[int] = None) -> DraftTree:
        """The branches alone (no draft step): when the drafter's own guesses are not
        expected to pay (a head still learning), copied tokens may still."""
        budget = self.max_nodes if max_nodes is None else max_nodes
        return self._merge(DraftTree(), self._found(k, params, rng), budget)

    def copy_depth(self, k, params, rng) -> int:
        """The longest copied branch (up to k tokens) the next draft would hold."""
        return max(map(len, self._found(k, params, rng)), default=0)

    def _found(self, k, params, rng) -> list[list[int]]:
        # Asked again in the same context (the engine's copies_alone, then the draft):
        # the branches found first. A branch's length hardly depends on k (copies run as
        # far as they are useful) and whatever is drafted is verified.
        if self._copies is None:
            found = [b.propose(k, params, rng).tokens for b in self.branches]
            self._copies = [f for f in found if f]
        return self._copies

    @staticmethod
    def _merge(tree: DraftTree, found, budget: int) -> DraftTree:
        for branch in found:
            tree = tree.add_branch(branch, max_new=max(0, budget - len(tree)))
        return tree

    @property
    def vocab_size_in_use(self):
        return self.primary.vocab_size_in_use if self.primary else None

    def memory_bytes(self) -> int:
        return sum(d.memory_bytes() for d in self.parts)
