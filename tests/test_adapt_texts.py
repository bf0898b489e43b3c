"""Learning from the person's files (adapt/texts.py, `mlxspec adapt --texts`): the fold is
exactly the weighted ridge problem over the target's states on the text (window starts
dropped; controls with the wrong weight and the wrong alignment), it teaches the head the
text's continuations, the head and its statistics are saved, and files are found (the
command: test_adapt_cli.py)."""
import mlx.core as mx
import numpy as np
import pytest

from mlxspec.adapt import Adapter
from mlxspec.adapt.ridge_trainer import PRIOR_ROWS
from mlxspec.adapt.texts import encode_files, learn_from_texts, text_files
from mlxspec.errors import InvalidParameterError
from mlxspec.head.linear import identity_map
from mlxspec.runtime.layered import LayeredModel
from tiny import tiny_model

V = 64


def reference_map(model, head, docs, window, weight, shift=1):
    """The ridge solution from scratch, text rows counting `weight` each."""
    lm = LayeredModel(model)
    k = head.config.exit_layer
    X, Y = [], []
    for ids in docs:
        for i in range(0, len(ids), window):
            w = ids[i: i + window]
            if len(w) <= shift:
                continue
            h = lm.run_layers(lm.embed(mx.array(w)[None]), 0, k, None)
            hn = np.array(lm.norm(lm.run_layers(h, k, lm.num_layers, None))[0])
            xk = np.array(head.norm(h[0]))
            X.append(np.hstack([xk[shift:], hn[:-shift], np.ones((len(w) - shift, 1), np.float32)]))
            Y.append(hn[shift:])
    X, Y = np.concatenate(X).astype(np.float64), np.concatenate(Y).astype(np.float64)
    G, B, d = weight * X.T @ X, weight * X.T @ Y, X.shape[1]
    lam = PRIOR_ROWS * np.trace(G) / (weight * len(X) * d)
    return np.linalg.solve(G + lam * np.eye(d), B + lam * np.array(identity_map(head.config))), len(X)


def docs_of(seed, n=2, length=30):
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(2, V, length)] for _ in range(n)]


def test_reading_is_the_weighted_ridge_problem_over_the_texts(tmp_path):
    """Windows of 7 cut each text: a window's first position has no previous state and
    gives no row. Weight 1 and a previous state one position further back (controls)
    give other maps."""
    model = tiny_model(V, layers=4, hidden=32, seed=3, scale=3.0)
    a = Adapter.open(model, tmp_path, None, exit_layer=1)
    docs = docs_of(0)
    out = learn_from_texts(a, docs, weight=0.25, window=7)
    want, rows = reference_map(model, a.head, docs, 7, 0.25)
    assert out["tokens"] == 60 and out["rows"] == rows
    assert a.trainer.stats.rows == pytest.approx(0.25 * rows)
    got = np.array(a.head.as_map())
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=2e-3)
    err = np.abs(got - want).max()
    assert np.abs(got - reference_map(model, a.head, docs, 7, 1.0)[0]).max() > 20 * err
    assert np.abs(got - reference_map(model, a.head, docs, 7, 0.25, shift=2)[0]).max() > 20 * err


def agreement(model, head, docs):
    """The head's top-1 (full vocabulary, true previous states) against the target's."""
    lm = LayeredModel(model)
    hits = n = 0
    for ids in docs:
        h = lm.run_layers(lm.embed(mx.array(ids)[None]), 0, head.config.exit_layer, None)
        hn = lm.norm(lm.run_layers(h, head.config.exit_layer, lm.num_layers, None))[0]
        pred = head(h[0, 1:], hn[:-1])
        hits += int(mx.sum(mx.argmax(lm.logits(pred), -1) == mx.argmax(lm.logits(hn[1:]), -1)).item())
        n += len(ids) - 1
    return hits / n


def test_reading_teaches_the_head_the_texts_continuations(tmp_path):
    model = tiny_model(V, layers=4, hidden=32, seed=1, scale=3.0)
    a = Adapter.open(model, tmp_path, None, exit_layer=1)
    docs = docs_of(1, n=4, length=120)
    before = agreement(model, a.head, docs)
    learn_from_texts(a, docs)
    after = agreement(model, a.head, docs)
    assert after > max(2 * before, before + 0.1), (before, after)


def test_what_was_read_is_saved_and_learning_carries_on(tmp_path):
    model = tiny_model(V, layers=4, hidden=32, seed=2, scale=3.0)
    a = Adapter.open(model, tmp_path, None, exit_layer=1)
    learn_from_texts(a, docs_of(2))
    b = Adapter.open(model, tmp_path, None)
    np.testing.assert_array_equal(np.array(b.head.as_map()), np.array(a.head.as_map()))
    assert b.trainer.stats.rows == a.trainer.stats.rows > 0 and b.counters.updates == 1
    learn_from_texts(b, docs_of(3))
    assert b.trainer.stats.rows > a.trainer.stats.rows


def test_the_same_forwards_teach_the_trained_exit(tmp_path):
    """With a trained exit, every position of the text (window starts too: the exit
    pairs a state with the final state at the same position) adds its layer-m state
    to the exit's statistics, exactly; the exit fitted on them agrees with the target
    on the text more than the untrained exit does. Control: layer m + 1's states give
    other statistics."""
    from mlxspec.hierarchy.exit_adapter import ExitAdapter

    model = tiny_model(V, layers=4, hidden=32, seed=4, scale=3.0)
    a = Adapter.open(model, tmp_path, None, exit_layer=1)
    lm = LayeredModel(model)
    ex = ExitAdapter(lm, [2], prior_rows=4.0)
    docs = docs_of(4, n=4, length=120)
    out = learn_from_texts(a, docs, window=50, exit=ex)
    ex.fold()
    assert ex.rows == out["tokens"] == 480

    def stats(m):
        G = 0
        for ids in docs:
            for i in range(0, len(ids), 50):
                h = lm.run_layers(lm.embed(mx.array(ids[i: i + 50])[None]), 0, m, None)
                x = np.array(lm.norm(h)[0], dtype=np.float64)
                x = np.hstack([x, np.ones((len(x), 1))])
                G = G + x.T @ x
        return G

    got = np.array(ex.G[2])
    np.testing.assert_allclose(got, stats(2), rtol=1e-3, atol=1e-2)
    assert np.abs(got - stats(3)).max() > 100 * np.abs(got - stats(2)).max()

    def exit_agreement():
        hits = n = 0
        for ids in docs:
            h = lm.run_layers(lm.embed(mx.array(ids)[None]), 0, 2, None)
            hn = lm.norm(lm.run_layers(h, 2, lm.num_layers, None))
            hits += int(mx.sum(mx.argmax(lm.logits(ex.state(2, h)), -1) == mx.argmax(lm.logits(hn), -1)).item())
            n += len(ids)
        return hits / n

    before = exit_agreement()
    assert ex.refit()
    after = exit_agreement()
    assert after > before + 0.1, (before, after)


def test_a_block_head_cannot_read(tmp_path):
    model = tiny_model(V, layers=4, hidden=32, seed=2)
    a = Adapter.open(model, tmp_path, None, exit_layer=1, new_head_kw={"kind": "block"})
    with pytest.raises(InvalidParameterError, match="linear head"):
        learn_from_texts(a, docs_of(0))


def test_files_are_found_under_folders_and_binary_ones_skipped(tmp_path):
    (tmp_path / "src" / ".git").mkdir(parents=True)
    (tmp_path / "src" / "a.py").write_text("def f():\n    return 1\n")
    (tmp_path / "src" / "notes.md").write_text("some notes")
    (tmp_path / "src" / ".git" / "x.txt").write_text("hidden")
    (tmp_path / "src" / "blob.txt").write_bytes(b"\0\1\2binary")
    (tmp_path / "src" / "image.png").write_bytes(b"\x89PNG")
    files = text_files([str(tmp_path / "src")])
    assert [f.name for f in files] == ["a.py", "blob.txt", "notes.md"]

    class Tok:
        def encode(self, text):
            return [ord(c) % V for c in text]

    docs = encode_files(Tok(), files, max_tokens=25)
    assert [len(d) for d in docs] == [22, 3]  # the binary file skipped, the cap reached
    with pytest.raises(InvalidParameterError, match="--texts path .* does not exist"):
        text_files([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidParameterError, match="no text files"):
        text_files([str(tmp_path / "empty")])
