"""The linear head learnt in closed form (head/linear.py, adapt/ridge_trainer.py): its
statistics are exactly the ridge problem over the verified rows (previous states aligned
across chunk boundaries, with a misaligned control), it learns from replies, its state
round-trips and carries on, and a file of an unknown kind is one clear error."""
import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import KVCache

from mlxspec.adapt import Adapter, state
from mlxspec.adapt.ridge_trainer import PRIOR_ROWS, RidgeTrainer
from mlxspec.drafters.head_runner import HeadTargetRunner
from mlxspec.head.linear import LinearHead, identity_map
from mlxspec.runtime.layered import LayeredModel
from tiny import tiny_model

V = 64


def feed(adapter, model, prompts, n=40):
    """Greedy replies recorded through a runner of the adapter's head (plain steps)."""
    seqs = []
    for prompt in prompts:
        runner = HeadTargetRunner(model, adapter.head)
        adapter.attach(runner)
        seq = list(prompt) + [int(mx.argmax(runner.prefill(list(prompt))).item())]
        adapter.reset_tokens(seq)
        for _ in range(n):
            nxt = int(mx.argmax(runner.forward([seq[-1]])[-1]).item())
            seq.append(nxt)
            adapter.extend_tokens([nxt])
        seqs.append(seq)
    return seqs


def reference_map(model, head, seqs, shift=1):
    """The ridge solution computed from scratch: x_t = [norm(h_k,t), hn_(t-shift), 1] -> hn_t
    over every position with a label (a context's first `shift` rows dropped)."""
    lm = LayeredModel(model)
    k = head.config.exit_layer
    X, Y = [], []
    for seq in seqs:
        toks = seq[:-1]
        caches = [KVCache() for _ in range(lm.num_layers)]
        h = lm.run_layers(lm.embed(toks), 0, k, caches)
        hn = lm.norm(lm.run_layers(h, k, lm.num_layers, caches))[0]
        # the buffer keeps rows in float16
        h = np.array(h[0].astype(mx.float32)).astype(np.float16).astype(np.float32)
        hn = np.array(hn.astype(mx.float32)).astype(np.float16).astype(np.float32)
        xk = np.array(head.norm(mx.array(h)))
        X.append(np.hstack([xk[shift:], hn[:-shift], np.ones((len(h) - shift, 1), np.float32)]))
        Y.append(hn[shift:])
    X, Y = np.concatenate(X).astype(np.float64), np.concatenate(Y).astype(np.float64)
    G, d = X.T @ X, X.shape[1]
    lam = PRIOR_ROWS * np.trace(G) / (len(X) * d)
    W0 = np.array(identity_map(head.config))
    return np.linalg.solve(G + lam * np.eye(d), X.T @ Y + lam * W0)


@pytest.mark.parametrize("chunk", [64, 7])
def test_the_fit_is_the_ridge_problem_over_the_verified_rows(tmp_path, chunk):
    """Chunk 7 cuts every reply into pieces: the first row of each piece must take its
    previous state from the piece before. A previous state shifted by one more position
    (the control) gives another map."""
    model = tiny_model(V, layers=4, hidden=32, seed=3, scale=3.0)
    a = Adapter.open(model, tmp_path, None, exit_layer=1)
    assert isinstance(a.head, LinearHead) and isinstance(a.trainer, RidgeTrainer)
    a.buffer.chunk = chunk
    rng = np.random.default_rng(0)
    seqs = feed(a, model, [[int(t) for t in rng.integers(2, V, 6)] for _ in range(3)])
    assert a.update(10.0, save=False)["steps"] == 1
    got = np.array(a.head.as_map())
    want = reference_map(model, a.head, seqs)
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=2e-3)
    wrong = reference_map(model, a.head, seqs, shift=2)
    assert np.abs(got - wrong).max() > 50 * np.abs(got - want).max()
    # nothing new: no refit, no double counting
    rows = a.trainer.stats.rows
    assert a.update(10.0, save=False)["steps"] == 0 and a.trainer.stats.rows == rows


def test_it_learns_from_replies(tmp_path):
    """Held-out agreement on replies to prompts seen before rises well above the untrained
    exit's after two fits (without fits it would stay where it was)."""
    model = tiny_model(V, layers=4, hidden=32, seed=5, scale=3.0)
    a = Adapter.open(model, tmp_path, None, exit_layer=1, core_size=V)
    prompts = [[5, 9, 2, 7, 11], [3, 3, 8, 1, 4]]
    feed(a, model, prompts)
    before = a.trainer.newest_agreement()
    for _ in range(2):
        a.update(10.0, save=False)
        feed(a, model, prompts)
    after = a.trainer.newest_agreement()
    assert before is not None and after is not None
    assert after >= before + 0.2, (before, after)


def test_state_round_trips_and_learning_carries_on(tmp_path):
    model = tiny_model(V, layers=4, hidden=32, seed=5, scale=3.0)
    a = Adapter.open(model, tmp_path, None, exit_layer=1)
    feed(a, model, [[1, 2, 3, 4]])
    assert a.update(10.0)["steps"] == 1  # saved
    rows = a.trainer.stats.rows
    b = Adapter.open(model, tmp_path, None)
    assert isinstance(b.trainer, RidgeTrainer) and b.head.config.kind == "linear"
    assert b.trainer.stats.rows == rows and b.trainer.steps == 1
    np.testing.assert_array_equal(np.array(b.head.as_map()), np.array(a.head.as_map()))
    np.testing.assert_array_equal(np.array(b.trainer.stats.G), np.array(a.trainer.stats.G))
    feed(b, model, [[6, 7, 8, 9]])
    b.update(10.0)
    c = Adapter.open(model, tmp_path, None)
    assert c.trainer.stats.rows > rows and c.trainer.steps == 2 and c.counters.updates == 2
    assert state.load(tmp_path).head_file.config.kind == "linear"


def test_a_head_of_an_unknown_kind_is_one_clear_error(tmp_path):
    from mlxspec.drafters.head import load_head_drafter
    from mlxspec.errors import HeadLoadError

    model = tiny_model(V, layers=4, hidden=32, seed=5, scale=3.0)
    a = Adapter.open(model, tmp_path, None, exit_layer=1)
    a.head.config.kind = "mystery"
    path = a.save()
    with pytest.raises(HeadLoadError, match="unknown head kind"):
        load_head_drafter(model, None, tmp_path, path)
