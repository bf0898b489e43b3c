"""Pruned draft vocabulary: index mapping both ways, core/context always present,
LRU eviction, neighbour index, frequency ranking."""
import mlx.core as mx
import numpy as np
import pytest

from mlxspec.head.vocab import DraftVocab, NeighbourIndex, rank_core


def check_mapping(v: DraftVocab):
    ids = v.ids()
    assert len(set(ids.tolist())) == len(ids) == v.size
    slots = v.to_sub(ids)
    assert np.all(slots >= 0)
    assert np.array_equal(v.to_full(slots), ids)  # full -> sub -> full
    used = np.flatnonzero(v.sub_to_full >= 0)
    assert np.array_equal(v.to_sub(v.to_full(used)), used)  # sub -> full -> sub
    outside = np.setdiff1d(np.arange(v.vocab_size), ids)
    assert np.all(v.to_sub(outside) == -1)


def test_mapping_both_ways_and_core_first():
    v = DraftVocab(100, core_ids=[5, 3, 9, 3], mode="dynamic", tail_capacity=4)
    assert list(v.core) == [5, 3, 9] and v.size == 3
    assert list(v.to_sub([5, 3, 9])) == [0, 1, 2]
    v.observe([50, 60, 5])
    assert v.size == 5 and v.contains(50) and v.contains(60)
    assert v.to_sub([50])[0] >= 3  # tail slots come after the core
    check_mapping(v)


def test_context_tokens_always_present_and_lru_eviction():
    core = list(range(10))
    v = DraftVocab(1000, core_ids=core, mode="dynamic", tail_capacity=8)
    prompt = [100, 101, 102, 3, 4]
    v.reset(prompt)
    assert all(v.contains(t) for t in core + prompt)
    rng = np.random.default_rng(0)
    recent = []
    for _ in range(200):
        t = int(rng.integers(0, 1000))
        v.observe([t])
        recent.append(t)
        assert all(v.contains(c) for c in core)
        last_tail = [x for x in dict.fromkeys(reversed(recent)) if x >= 10][:8]
        assert all(v.contains(x) for x in last_tail)  # the 8 most recent are kept
        assert v.size <= v.capacity
        check_mapping(v)
    v.reset([7, 500])
    assert v.size == 11 and v.contains(500) and v.contains(7)
    assert not any(v.contains(t) for t in recent if t >= 10 and t != 500)


def test_static_and_full_modes():
    s = DraftVocab(50, core_ids=[1, 2, 3], mode="static", tail_capacity=10)
    s.observe([40, 41])
    assert s.size == 3 and not s.contains(40)
    f = DraftVocab(50, core_ids=[1], mode="full")
    assert f.size == 50 and all(f.contains(t) for t in range(50))
    check_mapping(f)
    with pytest.raises(ValueError):
        DraftVocab(50, core_ids=[1], mode="weird")
    with pytest.raises(ValueError):
        DraftVocab(50, core_ids=[60], mode="static")


def test_neighbour_index_finds_close_embeddings():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((20, 16)).astype(np.float32)
    # token 20+i is a near copy of token i
    w = np.concatenate([base, base + 0.01 * rng.standard_normal((20, 16)).astype(np.float32)])
    idx = NeighbourIndex(mx.array(w), num_neighbours=1, bits=6)
    hits = sum(idx.neighbours(i) == (20 + i,) for i in range(20))
    assert hits >= 16  # LSH may split a rare pair across a hyperplane
    excl = np.zeros(40, bool)
    excl[20:] = True
    idx2 = NeighbourIndex(mx.array(w), num_neighbours=3, bits=6, exclude=excl)
    assert all(t < 20 for i in range(40) for t in idx2.neighbours(i))
    v = DraftVocab(40, core_ids=[0], mode="dynamic", tail_capacity=10, neighbours=idx)
    v.observe([5])
    assert v.contains(5) and v.contains(25)  # the token and its neighbour


def test_rank_core_frequency_and_eos():
    counts = np.array([0, 10, 5, 10, 1, 0])
    assert list(rank_core(counts, 3)) == [1, 3, 2]
    assert list(rank_core(counts, 3, always=[5])) == [5, 1, 3]
