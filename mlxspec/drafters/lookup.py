"""Prompt-lookup decoding: guess that the text repeats what is already in the context.

Replies copy from their prompt and from themselves (identifiers, the prompt's wording,
repeated code). The last `ngram` tokens are looked up among every earlier occurrence of
the same n-gram in the conversation, and the tokens that followed it are the guess.
The index is a dict updated per token, so a lookup is O(1). It needs no model and no
training, and costs no draft step: its guesses are point masses in the draft tree.
"""
from __future__ import annotations

from typing import Iterable

from mlxspec.drafters.base import Drafter
from mlxspec.tree import DraftTree

DEFAULT_NGRAMS = (3, 2)
DEFAULT_LOOKUP_LEN = 5


class ContextLookup:
    def __init__(self, ngrams: tuple = DEFAULT_NGRAMS):
        self.ngrams = tuple(sorted(set(int(n) for n in ngrams), reverse=True))
        if not self.ngrams or self.ngrams[-1] < 1:
            raise ValueError("n-gram sizes must be positive")
        self.seq: list[int] = []
        # (n-gram) -> index just past its latest occurrence that has a known successor
        self._index: dict[tuple, int] = {}

    def reset(self, tokens: Iterable[int] = ()) -> None:
        self.seq = []
        self._index = {}
        self.extend(tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        for t in tokens:
            # The n-grams that end at the current last token now get a successor.
            end = len(self.seq)
            for n in self.ngrams:
                if end >= n:
                    self._index[tuple(self.seq[end - n : end])] = end
            self.seq.append(int(t))

    def propose(self, max_len: int) -> list[int]:
        """The tokens that followed the latest earlier occurrence of the longest
        matching suffix n-gram (empty when nothing matches)."""
        if max_len <= 0:
            return []
        for n in self.ngrams:
            if len(self.seq) < n:
                continue
            at = self._index.get(tuple(self.seq[-n:]))
            if at is not None:
                return self.seq[at : at + max_len]
        return []


class LookupDrafter(Drafter):
    """The context lookup as a drafter of its own (`--draft lookup`), or as a branch
    source beside another drafter (compose.py)."""

    name = "lookup"

    def __init__(self, max_len: int = DEFAULT_LOOKUP_LEN, ngrams: tuple = DEFAULT_NGRAMS):
        self.max_len = max_len
        self.lookup = ContextLookup(ngrams)

    def reset(self, tokens, runner=None) -> None:
        self.lookup.reset(tokens)

    def extend(self, tokens) -> None:
        self.lookup.extend(tokens)

    def propose(self, k, params=None, rng=None, max_nodes=None) -> DraftTree:
        # A copied run is not a guess that grows with k: it is as long as it is useful.
        return DraftTree.chain(self.lookup.propose(max(k, self.max_len)), guessed=0)
