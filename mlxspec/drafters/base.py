"""The drafter interface: everything the round loop needs from a drafter.

The engine owns the target runner. It calls `make_runner(model)` once (a drafter that
shares the target's lower layers returns a runner that also drafts; the default is the
plain runner), then per reply `reset(tokens, runner)` with every token so far, and per
round `propose(k, params, rng)` -> a DraftTree (at most k deep), then
`accept(kept, next_token)` with the kept tokens (a root-to-node path of the tree) and
the target's next token. Tokens that arrive without a draft (plain steps) come through
`extend(tokens)`. A drafter rewinds whatever it drafted past what was kept.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from mlxspec.tree import DraftTree

if TYPE_CHECKING:
    from mlxspec.runtime.target import TargetRunner
    from mlxspec.sampling import SamplingParams


class Drafter:
    name = "drafter"

    def make_runner(self, model) -> "TargetRunner":
        from mlxspec.runtime.target import TargetRunner

        return TargetRunner(model)

    def reset(self, tokens: list[int], runner: "TargetRunner") -> None:
        """A reply starts: `tokens` is every token so far (the last one is the next input
        and is not in the target's cache yet); `runner` is the engine's runner, prefilled."""
        raise NotImplementedError

    def propose(self, k: int, params: "SamplingParams", rng: np.random.Generator,
                max_nodes: Optional[int] = None) -> DraftTree:
        """Guesses that continue the tokens so far, at most k deep (fewer, or none, when
        unsure); a tree of runner-ups and copies fills at most max_nodes nodes (None: the
        drafter's own default)."""
        raise NotImplementedError

    def accept(self, kept: list[int], next_token: int) -> None:
        """The target kept `kept` (tokens of a root-to-node path of the last draft) and
        `next_token` follows them."""
        self.extend(list(kept) + [int(next_token)])

    def extend(self, tokens: list[int]) -> None:
        """Tokens were appended without a draft."""
        raise NotImplementedError

    def acceptance_hint(self) -> Optional[float]:
        """A new estimate of the per-position acceptance from outside the rounds (a head
        that learnt since its last measured rounds), once; None: nothing new."""
        return None

    def step_cost_hint(self, target_bytes: int) -> Optional[float]:
        """The cost of one draft step relative to one target step, as a first guess until
        a step is timed; None: no better guess than the governor's prior."""
        return None

    def last_catch_up_s(self) -> float:
        """Seconds the last propose spent feeding tokens that came by plain steps (a
        separate draft model catching up): paid once, not a cost per drafted token."""
        return 0.0

    def end_reply(self, stats, seconds: float) -> None:
        """A reply ended (its SpecStats and seconds): a drafter that learns (adaptive.py)
        trains here, within a budget. Called by response.responses."""

    @property
    def vocab_size_in_use(self) -> Optional[int]:
        """Size of the vocabulary the drafter predicts over (pruned heads)."""
        return None

    def memory_bytes(self) -> int:
        """Bytes the drafter adds on top of the target."""
        return 0
