"""Draft trees: tree attention, cache compaction, greedy tree verification, and the head
drafter's context-copy branch."""
import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import KVCache

from mlxspec.runtime.tree_attention import ancestor_matrix, compact
from mlxspec.tree import DraftTree, add_branch
from mlxspec.drafters.compose import Composite
from mlxspec.drafters.head import HeadDrafter, HeadTargetRunner
from mlxspec.drafters.lookup import ContextLookup, LookupDrafter
from mlxspec.engine import Engine
from mlxspec.head.model import new_head
from mlxspec.sampling import SamplingParams
from mlxspec.runtime.target import TargetRunner
from mlxspec.verify import verify
from tiny import CharTokenizer, tiny_model

V = 64
LOGIT_TOL = 1e-4  # as for chain verification: float32 reassociation only


def make_drafter(model, lookup_len=8, feature=False, width=3, min_conf=0.0, frontier=3):
    head = new_head(model, 2, feature_input=feature)
    d = HeadDrafter(model, head, core_ids=list(range(24)), vocab_mode="dynamic", tail_capacity=16,
                    num_neighbours=2, min_confidence=min_conf, tree_width=width, tree_frontier=frontier)
    return Composite(d, [LookupDrafter(lookup_len)]) if lookup_len else d


def test_ancestor_matrix():
    m = ancestor_matrix([-1, 0, 0, 1])
    assert m.tolist() == [[True, False, False, False],
                          [True, True, False, False],
                          [True, False, True, False],
                          [True, True, False, True]]
    with pytest.raises(ValueError):
        ancestor_matrix([-1, 2, 0])


def test_compact_moves_the_kept_entries_to_the_front():
    c = KVCache()
    x = mx.arange(10, dtype=mx.float32).reshape(1, 1, 10, 1)
    c.update_and_fetch(x, x + 100)
    compact(c, 4, [0, 2, 5])
    assert c.offset == 7
    assert c.keys_and_values()[0].reshape(-1).tolist() == [0, 1, 2, 3, 4, 6, 9]
    assert c.keys_and_values()[1].reshape(-1).tolist() == [100, 101, 102, 103, 104, 106, 109]


def test_context_lookup_finds_the_latest_longest_match():
    lk = ContextLookup((3, 2))
    lk.reset([1, 2, 3, 4, 9, 2, 3, 5, 1, 2, 3])
    assert lk.propose(3) == [4, 9, 2]  # the trigram 1 2 3 wins over the later bigram 2 3
    lk.reset([1, 2, 3, 4, 1, 2, 3, 5, 1, 2, 3])
    assert lk.propose(2) == [5, 1]  # the latest occurrence
    lk.extend([7])
    assert lk.propose(4) == []
    lk.reset([5, 6, 5, 6])
    assert lk.propose(8) == [5, 6]  # runs up to the end of what exists
    assert lk.propose(0) == []


def test_branch_merges_into_the_tree_as_a_trie():
    chain = ([1, 2, 3], [-1, 0, 1])
    assert add_branch(*chain, [1, 2, 4, 5]) == ([1, 2, 3, 4, 5], [-1, 0, 1, 1, 3])
    assert add_branch(*chain, [1, 2, 3, 6]) == ([1, 2, 3, 6], [-1, 0, 1, 2])
    assert add_branch([1, 9], [-1, -1], [9, 8]) == ([1, 9, 8], [-1, -1, 1])
    assert add_branch(*chain, []) == chain
    assert add_branch(*chain, [1, 7, 8, 9], max_new=2) == ([1, 2, 3, 7, 8], [-1, 0, 1, 0, 3])


def test_cut_drops_deep_nodes_and_keeps_parents_with_children():
    t = DraftTree.chain([1, 2, 3]).cut(2, 10)
    assert (t.tokens, t.parents, t.is_chain) == ([1, 2], [-1, 0], True)
    t = DraftTree([1, 2, 3, 4, 5], [-1, 0, 1, 1, 3], guessed=3).cut(3, 10)
    assert (t.tokens, t.parents, t.guessed) == ([1, 2, 3, 4], [-1, 0, 1, 1], 3)
    t = DraftTree([1, 7, 8], [-1, -1, 1]).cut(1, 10)
    assert (t.tokens, t.parents) == ([1, 7], [-1, -1])
    t = DraftTree([1, 2, 7, 8], [-1, 0, -1, 2]).cut(5, 3)  # node budget: the first 3
    assert (t.tokens, t.parents) == ([1, 2, 7], [-1, 0, -1])


def test_verify_tree_greedy_follows_the_target():
    # root -> a(0) -> b(1); root -> c(2) -> d(3)
    nodes, parents = [10, 11, 12, 13], [-1, 0, -1, 2]
    logits = np.zeros((5, 20))
    logits[0, 12] = 1  # target says c after the root
    logits[3, 13] = 1  # then d after c
    logits[4, 5] = 1  # then 5 (not drafted)
    tree = DraftTree(nodes, parents)
    path, nxt = verify(logits, tree, [0], SamplingParams())
    assert path == [2, 3] and nxt == 5
    logits[0] = 0
    logits[0, 7] = 1
    assert verify(logits, tree, [0], SamplingParams()) == ([], 7)


def _path_to(i, parents):
    out = []
    while i >= 0:
        out.append(i)
        i = parents[i]
    return out[::-1]


@pytest.mark.parametrize("arch,feature", [("llama", False), ("qwen2", True)])
@pytest.mark.parametrize("drafted", [False, True])
def test_tree_forward_equals_each_path_run_alone(arch, feature, drafted):
    """Every tree row's logits equal a plain forward of its root-to-node path; after
    accepting a path, the caches hold exactly that path (later forwards still match).
    Trees: the head's own (drafted: several nodes per level fed at once, their lower
    layers reused), or a chain plus hand-made branches."""
    model = tiny_model(V, layers=4, hidden=32, seed=1, arch=arch, scale=2.0)
    d = make_drafter(model, feature=feature, lookup_len=0, width=3 if drafted else 1)
    runner, ref = d.make_runner(model), TargetRunner(model)
    rng = np.random.default_rng(0)
    prompt = [int(t) for t in rng.integers(0, V, 11)]
    runner.prefill(prompt), ref.prefill(prompt)
    seq = prompt + [5]
    d.reset(seq, runner)
    for _ in range(4):
        reused = runner.reused
        draft = d.propose(3, SamplingParams(), rng)
        if drafted:
            assert not draft.is_chain
            nodes, parents = draft.tokens, draft.parents
        else:
            chain = draft.tokens  # feeds root + chain[:-1]
            nodes = list(chain) + [int(t) for t in rng.integers(0, V, 4)]
            parents = list(range(-1, len(chain) - 1)) + [-1, len(chain), 0, len(chain) + 2]
        got = runner.forward_tree([seq[-1]] + nodes, parents)
        for i in range(len(nodes)):
            path = [nodes[j] for j in _path_to(i, parents)]
            want = ref.forward([seq[-1]] + path)[-1]
            ref.trim(len(path) + 1)
            assert float(mx.abs(got[i + 1] - want).max()) <= LOGIT_TOL
        keep = _path_to(int(rng.integers(0, len(nodes))), parents)
        assert runner.reused > reused + (2 if drafted else 0)  # fed nodes were not recomputed
        runner.accept_tree([0] + [j + 1 for j in keep])
        kept = [nodes[j] for j in keep]
        nxt = int(rng.integers(0, V))
        d.accept(kept, nxt)
        ref.forward([seq[-1]] + kept)
        seq += kept + [nxt]
        assert runner.length == ref.length == len(seq) - 1
        assert {c.offset for c in runner.cache} | {runner.head_cache.offset} == {runner.length}
    # the caches hold the accepted paths: a chain round after the trees still matches
    d.tree_width = 1
    draft = d.propose(3, SamplingParams(), rng).tokens
    a, b = runner.forward([seq[-1]] + draft), ref.forward([seq[-1]] + draft)
    assert float(mx.abs(a - b).max()) <= LOGIT_TOL


def test_head_cache_after_a_tree_equals_a_chain_run():
    """The head's own cache is rebuilt over the accepted path from the true states, as
    if the path had been verified as a chain."""
    model = tiny_model(V, layers=4, hidden=32, seed=6, arch="qwen2", scale=2.0)
    d1, d2 = make_drafter(model, feature=True), make_drafter(model, feature=True)
    r1, r2 = d1.make_runner(model), d2.make_runner(model)
    prompt = [3, 9, 4, 1, 7]
    for d, r in ((d1, r1), (d2, r2)):
        r.prefill(prompt)
        d.reset(prompt + [8], r)
    r1.forward_tree([8, 11, 12, 13, 14], [-1, 0, -1, 2])
    r1.accept_tree([0, 3, 4])
    r2.forward([8, 13, 14])
    assert r1.head_cache.offset == r2.head_cache.offset
    for a, b in zip(r1.head_cache.keys_and_values(), r2.head_cache.keys_and_values()):
        assert float(mx.abs(a - b).max()) <= LOGIT_TOL
    assert float(mx.abs(r1.last_feature() - r2.last_feature()).max()) <= LOGIT_TOL


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
# the head's chain; as shipped (runner-up leaves); an EAGLE-2 tree
@pytest.mark.parametrize("width,frontier", [(1, 1), (2, 1), (3, 3)])
def test_greedy_with_copy_branches_equals_plain(arch, width, frontier, monkeypatch):
    """Repetitive tiny-model output makes the context lookup fire: tree rounds happen,
    and the output is token for token the plain greedy output."""
    trees = []
    orig = HeadTargetRunner.accept_tree

    def spy(self, path):
        trees.append(len(path))
        return orig(self, path)

    monkeypatch.setattr(HeadTargetRunner, "accept_tree", spy)
    for seed in range(3):
        model = tiny_model(V, layers=4, hidden=32, seed=seed, arch=arch, scale=3.0)
        tok = CharTokenizer(V)
        prompt = [int(t) for t in np.random.default_rng(seed).integers(0, V, 6)] * 2
        ref = [r.token for r in Engine(model, tok).stream(prompt, SamplingParams(), max_tokens=40)]
        for k in (1, 4):
            eng = Engine(model, tok, make_drafter(model, width=width, frontier=frontier), num_draft=k, draft_name="head",
                         adaptive=False)
            got = [r.token for r in eng.stream(prompt, SamplingParams(), max_tokens=40)]
            assert got == ref
            # the drafter's context (for copying) is the real one, also after rounds
            # whose tree the engine cut to a chain near the end
            assert eng.drafter.primary._seq[: len(prompt) + len(got)] == prompt + got
    assert trees and max(trees) > 1  # tree rounds happened, and kept tokens


def test_copy_branch_joins_sampled_drafts_as_point_masses():
    """At temperature > 0 the copied branch still joins the head's sampled chain: its
    nodes carry no distribution (a point mass, verified by the exact tree rule)."""
    model = tiny_model(V, layers=4, hidden=32, seed=2, scale=3.0)
    d = make_drafter(model)
    runner = d.make_runner(model)
    prompt = [1, 2, 3, 4, 1, 2, 3]
    runner.prefill(prompt)
    d.reset(prompt + [4], runner)  # ... 1 2 3 4 : the lookup continues with 1 2 3 4
    draft = d.propose(2, SamplingParams(temp=1.0), np.random.default_rng(0))
    own = [i for i, q in enumerate(draft.q) if q is not None]
    assert own and len(own) <= 2 and draft.parents[: len(own)] == list(range(-1, len(own) - 1))
    copied = [draft.tokens[i] for i, q in enumerate(draft.q) if q is None]
    assert copied and set(copied) <= {1, 2, 3, 4}


def test_engine_hands_the_kept_tokens_to_the_drafter():
    """Near max_tokens the engine cuts a tree to the depth it may still produce; if that
    leaves a chain, the drafter must still learn which tokens were kept."""
    from mlxspec.drafters.base import Drafter

    model = tiny_model(V, layers=2, hidden=32, seed=3, scale=3.0)
    tok = CharTokenizer(V)
    prompt = [1, 2, 3, 4]
    ref = [r.token for r in Engine(model, tok).stream(prompt, SamplingParams(), max_tokens=3)]

    class TreeStub(Drafter):
        kept = None

        def reset(self, tokens, runner):
            pass

        def extend(self, tokens):
            pass

        def propose(self, k, params, rng, max_nodes=None):  # the right token, then two depth-2 children
            return DraftTree([ref[1], 7, 9], [-1, 0, 0])

        def accept(self, kept, next_token):
            TreeStub.kept = (list(kept), next_token)

    eng = Engine(model, tok, TreeStub(), num_draft=4, draft_name="stub", adaptive=False)
    assert [r.token for r in eng.stream(prompt, SamplingParams(), max_tokens=3)] == ref
    assert TreeStub.kept == ([ref[1]], ref[2])
