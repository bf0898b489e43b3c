"""The reply store: n-gram retrieval from the target's own earlier replies."""
import numpy as np
import pytest

from mlxspec.runtime.layered import LayeredModel
from mlxspec.drafters.compose import Composite
from mlxspec.drafters.head import HeadDrafter, HeadTargetRunner, load_head_drafter
from mlxspec.drafters.reply_store import (SEP, STORE_FILE, ReplyStore, StoreDrafter, load_store, replies_from_rows,
                                          save_store)
from mlxspec.engine import Engine
from mlxspec.head.io import save_head
from mlxspec.head.model import new_head
from mlxspec.training.selfgen import write_shard, write_reply_store
from mlxspec.sampling import SamplingParams
from tiny import CharTokenizer, tiny_model

V = 64


def store_of(*replies, **kw):
    tokens = []
    for r in replies:
        tokens += list(r) + [SEP]
    return ReplyStore(np.array(tokens), **kw)


def test_longest_ngram_wins_and_the_most_frequent_continuation_is_proposed():
    st = store_of([1, 2, 3, 10, 11], [9, 2, 3, 20, 21], [7, 2, 3, 20, 22], [5, 2, 3, 20, 21], ngrams=(3, 2))
    # bigram (2, 3): continuations 10 11 (once), 20 21 (twice), 20 22 (once)
    assert st.propose([0, 2, 3], 2) == [20, 21]
    # the trigram (1, 2, 3) occurred once, followed by 10 11: longer context wins
    assert st.propose([1, 2, 3], 5) == [10, 11]
    assert st.propose([0, 0, 3], 4) == []  # no match: nothing
    assert st.propose([1, 2, 3], 0) == []


def test_a_continuation_stops_at_the_end_of_its_reply():
    st = store_of([1, 2, 3], [4, 5, 6, 7], ngrams=(2,))
    assert st.propose([1, 2], 5) == [3]  # not 3 then the next reply's tokens
    assert st.propose([2, 3], 5) == []  # 3 ended its reply: no continuation
    # n-grams do not span two replies either
    assert st.propose([3, 4], 5) == []


def test_the_default_store_needs_three_matching_tokens():
    st = store_of([1, 2, 3, 10, 11])
    assert st.propose([0, 2, 3], 2) == []  # a bigram match alone proposes nothing
    assert st.propose([1, 2, 3], 2) == [10, 11]


def test_replies_from_rows_keeps_the_assistant_header():
    rows = np.array([[1, 2, 3, 4, 5, 6, -1], [7, 8, 9, 10, -1, -1, -1]])
    got = replies_from_rows(rows, np.array([3, 2]), lead=2)
    assert got.tolist() == [2, 3, 4, 5, 6, SEP, 7, 8, 9, 10, SEP]


def test_store_file_round_trips_and_rejects_another_vocabulary(tmp_path):
    tokens = np.array([1, 2, 3, 4, SEP, 1, 2, 5, SEP])
    path = tmp_path / STORE_FILE
    save_store(path, tokens, vocab_size=V, source="test")
    st = load_store(path, V)
    assert st.tokens.tolist() == tokens.tolist() and st.num_tokens == 7
    with pytest.raises(ValueError, match="another vocabulary"):
        load_store(path, V + 1)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="unreadable"):
        load_store(path, V)


def _head_folder(tmp_path, model):
    head = new_head(model, 2, feature_input=True)
    save_head(tmp_path / "heads" / "h.safetensors", head, np.arange(24), LayeredModel(model).fingerprint(),
              {"vocab": 24, "vocab_mode": "dynamic"})
    return tmp_path


def test_head_drafter_loads_the_models_store_and_skips_a_bad_one(tmp_path, monkeypatch):
    from mlxspec import loading

    model = tiny_model(V, layers=4, hidden=32, seed=1)
    folder = _head_folder(tmp_path, model)
    target = loading.LoadedModel("tiny", folder, model, CharTokenizer(V), {"vocab_size": V})

    def branches():
        d = loading.with_branches(target, load_head_drafter(model, CharTokenizer(V), folder))
        return d, [b for b in d.branches if isinstance(b, StoreDrafter)]

    assert branches()[1] == []
    save_store(folder / STORE_FILE, np.array([1, 2, 3, 4, SEP]), vocab_size=V, source="test")
    d, (st,) = branches()
    assert st.store.propose([1, 2, 3], 3) == [4]
    # the bench's draft memory counts the store
    without = loading.with_branches(target, load_head_drafter(model, CharTokenizer(V), folder), store=False)
    assert st.store.nbytes > 0 and d.memory_bytes() == without.memory_bytes() + st.store.nbytes
    (folder / STORE_FILE).write_bytes(b"garbage")
    warnings = []
    # (the CLI tests configure the "mlxspec" logger, so caplog may not see it)
    monkeypatch.setattr(loading.log, "warning", lambda msg, *a: warnings.append(msg % a))
    assert branches()[1] == []
    assert len(warnings) == 1 and "unreadable" in warnings[0]


def test_write_reply_store_from_selfgen_shards(tmp_path):
    rows = np.array([[5, 6, 7, 8, 9, -1], [5, 6, 1, 2, 3, 4]], dtype=np.int32)
    write_shard(tmp_path / "gen" / "shard-0000", {"tokens": rows, "prompt_len": np.array([2, 3])}, {})
    path = write_reply_store(tmp_path / "gen", tmp_path, vocab_size=V)
    st = load_store(path, V)
    assert st.tokens.tolist() == [5, 6, 7, 8, 9, SEP, 5, 6, 1, 2, 3, 4, SEP]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_greedy_with_a_reply_store_equals_plain_and_keeps_its_guesses(arch):
    """The store holds the target's own greedy reply and a corrupted copy: its branch
    is verified beside the head's chain, more drafted tokens are kept than without it,
    and the output is token for token the plain greedy output."""
    for seed in range(3):
        model = tiny_model(V, layers=4, hidden=32, seed=seed, arch=arch, scale=3.0)
        tok = CharTokenizer(V)
        prompt = [int(t) for t in np.random.default_rng(seed).integers(0, V, 7)]
        ref = [r.token for r in Engine(model, tok).stream(prompt, SamplingParams(), max_tokens=30)]
        rng = np.random.default_rng(seed + 10)
        noisy = [int(t) if rng.random() < 0.7 else int(rng.integers(0, V)) for t in ref]
        store = store_of(prompt[-3:] + ref, prompt[-3:] + noisy, prompt[-3:] + noisy)
        head = new_head(model, 2, feature_input=True)
        kept = {}
        for label, st in (("store", store), ("none", None)):
            drafter = HeadDrafter(model, head, core_ids=list(range(16)), vocab_mode="dynamic", tail_capacity=4,
                                  num_neighbours=0, min_confidence=0.5)
            if st is not None:
                drafter = Composite(drafter, [StoreDrafter(st)])
            eng = Engine(model, tok, drafter, num_draft=2, draft_name="head", adaptive=False)
            out = list(eng.stream(prompt, SamplingParams(), max_tokens=30))
            assert [r.token for r in out] == ref
            kept[label] = out[-1].stats.accepted
        assert kept["store"] > kept["none"] + 5
