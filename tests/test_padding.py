"""Verification at the measured cheapest size: a forward whose row count fills the BLAS's
blocks can cost less than a shorter one (docs/benchmarks.md), so the runner pads a
verification forward to costs.padded_size with rows nobody reads, and the governor and
the tree budget use the curve it then pays. Padding must change no output and leave
the caches exactly as an unpadded round does."""
import mlx.core as mx
import numpy as np
import pytest

from mlxspec.costs import CostModel
from mlxspec.drafters.base import Drafter
from mlxspec.drafters.compose import Composite
from mlxspec.drafters.draft_model import ModelDrafter
from mlxspec.drafters.lookup import LookupDrafter
from mlxspec.engine import Engine
from mlxspec.runtime.target import TargetRunner
from mlxspec.sampling import SamplingParams
from mlxspec.tree import DraftTree
from tiny import CharTokenizer, tiny_model

V = 64
# The shape measured for Qwen2.5-Coder-1.5B in float32 here: 8 rows cost less than 5-7.
JAGGED = CostModel({1: 1.0, 2: 1.20, 3: 1.18, 4: 1.20, 5: 1.44, 6: 1.71, 7: 1.37, 8: 1.08, 9: 1.28,
                    10: 1.46, 11: 1.48, 12: 1.51, 13: 1.83, 14: 2.01, 15: 1.72, 16: 1.41})
FLAT = CostModel({1: 1.0, 2: 1.02, 4: 1.03, 8: 1.05, 12: 1.06, 16: 1.08})


def test_the_cheapest_size_at_or_above_is_paid():
    assert [JAGGED.padded_size(n) for n in (1, 2, 5, 8, 9, 10, 16, 20)] == [1, 8, 8, 8, 9, 16, 16, 20]
    paid = JAGGED.effective()
    assert paid.ratio(3) == paid.ratio(8) == 1.08 and paid.ratio(9) == 1.28 and paid.ratio(12) == 1.41
    # a tree of 8 nodes (9 rows) costs a jump over 7 (8 rows): the budget stops below it
    assert paid.tree_budget(8) == 7 and JAGGED.tree_budget(8) == 7
    assert FLAT.tree_budget(8) == 8 and FLAT.effective().points == FLAT.points


@pytest.mark.parametrize("chain", [True, False])
def test_padded_verification_gives_the_same_rows_and_caches(chain):
    model = tiny_model(V, layers=2, hidden=32, seed=1)
    prompt = [3, 5, 7, 9, 11]
    tree = DraftTree.chain([4, 6, 8]) if chain else DraftTree([4, 6, 8, 10], [-1, 0, -1, 2])
    out = {}
    for rows in (0, 8):
        runner = TargetRunner(model)
        runner.prefill(prompt[:-1])
        logits = runner.verify(prompt[-1], tree, rows)
        mx.eval(logits)
        ran = runner.length
        runner.keep(tree, [0, 1] if chain else [1])  # a path: nodes 0, 1 / node 1 alone
        after = runner.forward([12])
        mx.eval(after)
        out[rows] = (np.array(logits), np.array(after), ran, runner.length, runner.cache[0].offset)
    (l0, a0, ran0, n0, off0), (l8, a8, ran8, n8, off8) = out[0], out[8]
    assert ran0 == len(prompt) + len(tree) and ran8 == len(prompt) - 1 + 8  # it did pad
    assert l8.shape == l0.shape and np.allclose(l8, l0, atol=1e-5)
    assert (n8, off8) == (n0, off0) and np.allclose(a8, a0, atol=1e-5)  # the padding left no trace


def _engine(target, drafter, cost):
    engine = Engine(target, CharTokenizer(V), drafter, num_draft=4, draft_name=drafter.name)
    engine.cost = cost
    return engine


class RightAndWrong(Drafter):
    """Free copies of the reference reply: a wrong sibling, then the right chain (a tree)."""
    name = "copies"

    def __init__(self, ref, start):
        self.ref, self.start = ref, start

    def reset(self, tokens, runner):
        self.done = len(tokens) - self.start

    def extend(self, tokens):
        self.done += len(tokens)

    def propose(self, k, params, rng, max_nodes=None):
        right = self.ref[self.done: self.done + 2]
        wrong = [(t + 1) % V for t in right[:1]]
        return DraftTree(wrong + right, [-1, -1, 1][: 1 + len(right)], guessed=0)


@pytest.mark.parametrize("kind", ["self-draft", "self-draft+lookup", "tree of copies"])
def test_greedy_equals_plain_while_verification_pads(kind, monkeypatch):
    """The target drafting for itself (every draft kept: long chains) and a tree of
    copies with a wrong sibling (short trees, padded the most)."""
    target = tiny_model(V, layers=2, hidden=48, seed=3, scale=3.0)
    prompt = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2]
    plain = [r.token for r in Engine(target, CharTokenizer(V)).stream(prompt, SamplingParams(), max_tokens=24)]
    model = ModelDrafter(target, V, min_confidence=0.0)
    drafter = {"self-draft": model, "self-draft+lookup": Composite(model, [LookupDrafter()]),
               "tree of copies": RightAndWrong(plain, len(prompt))}[kind]
    rows = []
    verify = TargetRunner.verify

    def spy(self, root, tree, n=0):
        rows.append((len(tree) + 1, n))
        return verify(self, root, tree, n)

    monkeypatch.setattr(TargetRunner, "verify", spy)
    engine = _engine(target, drafter, JAGGED)
    out = [r.token for r in engine.stream(prompt, SamplingParams(), max_tokens=24)]
    assert out == plain
    assert rows and all(n == JAGGED.padded_size(m) for m, n in rows)
    assert any(n > m for m, n in rows)  # some round ran padded
    assert engine.tree_nodes == 7


def test_padding_never_runs_past_the_context(monkeypatch):
    target = tiny_model(V, layers=2, hidden=48, seed=3, scale=3.0)
    prompt = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2]
    limit = len(prompt) + 14
    ends = []
    verify = TargetRunner.verify

    def spy(self, root, tree, n=0):
        ends.append((self.length + max(n, len(tree) + 1), n > len(tree) + 1))
        return verify(self, root, tree, n)

    monkeypatch.setattr(TargetRunner, "verify", spy)
    engine = Engine(target, CharTokenizer(V), ModelDrafter(target, V, min_confidence=0.0), num_draft=4,
                    draft_name="self", max_context=limit)
    engine.cost = JAGGED
    out = list(engine.stream(prompt, SamplingParams(), max_tokens=14))
    assert len(out) == 14 and ends and all(end <= limit for end, _ in ends)
    assert any(padded for _, padded in ends)  # it padded where the context had room
