"""The drafter interface: everything the verification loop needs from a drafter.

A drafter keeps its own state (caches, pending input tokens). The engine calls
`reset(prompt)` once, then per round `propose(k, params, rng)` and `commit(n, token)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:
    from mlxspec.sampling import SamplingParams
    from mlxspec.runtime.target import TargetRunner


@dataclass
class Draft:
    tokens: list[int]
    # Row i is the (processed) distribution token i was drawn from, float64, full
    # target vocabulary (zeros outside a pruned vocabulary). None when greedy.
    probs: Optional[np.ndarray] = None
    # A tree instead of a chain (greedy only): parents[i] is token i's parent, -1 for a
    # child of the last verified token. None: tokens form one chain.
    parents: Optional[list[int]] = None
    # How many leading tokens the drafter's own model guessed (the rest were copied from
    # the context); the governor sizes the next draft on those. None: all of them.
    own: Optional[int] = None


class Drafter:
    name = "drafter"
    # True for a drafter that stops drafting by its own confidence (the head): the
    # governor's draft length is then only a cap, and an early rejection does not
    # shorten it (the drafter already drafts little where it is unsure).
    sizes_own_drafts = False

    def make_target_runner(self, model) -> "TargetRunner":
        """The object that runs the target for verification. Drafters that share the
        target's cache or hidden states (early-layer heads) return their own."""
        from mlxspec.runtime.target import TargetRunner

        return TargetRunner(model)

    def reset(self, prompt: list[int], target: "TargetRunner") -> None:
        """Start a new sequence: `prompt` is every token so far (its last token is the
        next input). `target` is the runner from make_target_runner, already prefilled."""
        raise NotImplementedError

    def propose(self, k: int, params: "SamplingParams", rng: np.random.Generator) -> Draft:
        """Guess up to k next tokens (fewer when unsure; zero is allowed)."""
        raise NotImplementedError

    def commit(self, num_accepted: int, next_token: int) -> None:
        """The first `num_accepted` drafted tokens were kept and `next_token` follows
        them (a correction or bonus from the target). Rewind anything past that."""
        raise NotImplementedError

    def commit_path(self, accepted: list[int], next_token: int) -> None:
        """The same, given the kept tokens themselves (after a tree round: a root-to-node
        path of the tree). Drafters that propose trees must override this."""
        self.commit(len(accepted), next_token)

    def extend(self, tokens: list[int]) -> None:
        """Tokens were appended without drafting (plain-decoding fall-back, or a new chat
        turn). Default: treat as pending input for the next proposal."""
        raise NotImplementedError

    @property
    def vocab_size_in_use(self) -> Optional[int]:
        """Size of the vocabulary the drafter currently predicts over (pruned heads)."""
        return None

    def memory_bytes(self) -> int:
        """Parameters the drafter adds on top of the target."""
        return 0
