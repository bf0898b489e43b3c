"""OnlineTrainer: a head trained on a tiny model's own greedy replies agrees more often
with the target on held-out replies; slices keep to their budget and yield at once."""
import time

import numpy as np
import pytest

from mlxspec.adapt.buffer import StateBuffer
from mlxspec.adapt.online import AdaptSettings, OnlineTrainer
from mlxspec.engine import Engine
from mlxspec.head.model import new_head
from mlxspec.sampling import SamplingParams
from test_adapt_buffer import Recording
from tiny import CharTokenizer, tiny_model

V = 64


def collect(model, head, seed, prompts, n=48):
    """Greedy replies to random prompts through the engine (speculating with `head`),
    their states recorded as the wiring will."""
    buf = StateBuffer(vocab_size=V)
    d = Recording(model, head, core_ids=list(range(V)), vocab_mode="static", min_confidence=0.0, buffer=buf)
    eng = Engine(model, CharTokenizer(V), d, num_draft=4, draft_name="h", adaptive=False)
    rng = np.random.default_rng(seed)
    for _ in range(prompts):
        eng.reset()
        list(eng.stream([int(t) for t in rng.integers(0, V, 6)], SamplingParams(), max_tokens=n))
    return buf


@pytest.fixture(scope="module")
def model():
    return tiny_model(V, layers=4, hidden=32, seed=0, scale=3.0)


@pytest.fixture(scope="module")
def replies(model):
    """(training, held-out) buffers: the target's states do not depend on the head that
    drafted, so both heads below train on the same rows."""
    head = new_head(model, 1)
    return collect(model, head, 0, 24), collect(model, head, 99, 8)


@pytest.mark.parametrize("feature", [False, True])
def test_online_training_improves_held_out_agreement(model, replies, feature):
    head = new_head(model, 1, feature_input=feature)
    train, held = replies
    trainer = OnlineTrainer(model, head, train, list(range(V)),
                            AdaptSettings(lr=1e-3, curriculum_steps=60, seed=0))
    before = trainer.evaluate(held)["top1_agreement_full_vocab"]
    losses = []
    for _ in range(4):
        out = trainer.step(60.0, max_steps=25)
        assert out["steps"] == 25 and np.isfinite(out["loss"])
        losses.append(out["loss"])
    after = trainer.evaluate(held)["top1_agreement_full_vocab"]
    print(f"\nfeature={feature}: held-out top-1 agreement {before:.3f} -> {after:.3f} "
          f"({trainer.steps} steps, {len(train)} rows, loss {losses[0]:.3f} -> {losses[-1]:.3f})")
    assert trainer.steps == 100
    assert after >= before + 0.06, (before, after)
    assert losses[-1] < losses[0]


def test_step_keeps_its_budget_and_yields_at_once(model):
    head = new_head(model, 1)
    buf = collect(model, head, 1, 3, n=24)
    tr = OnlineTrainer(model, head, buf, list(range(V)))
    assert tr.step(1.0, stop=lambda: True)["steps"] == 0  # a new prompt: no step at all
    assert tr.step(0.0)["steps"] == 0
    t0 = time.perf_counter()
    out = tr.step(0.3)
    spent = time.perf_counter() - t0
    assert out["steps"] >= 1 and spent < 0.3 + 0.2  # the last step may overrun by about one step
    calls = []
    out = tr.step(30.0, stop=lambda: calls.append(1) or len(calls) > 3)
    assert out["steps"] == 3
    # an empty buffer: nothing to do, no error
    assert OnlineTrainer(model, new_head(model, 1), StateBuffer(), list(range(V))).step(1.0)["steps"] == 0


def test_curriculum_weights_confident_positions_first(model):
    head = new_head(model, 1)
    buf = collect(model, head, 2, 2, n=24)
    tr = OnlineTrainer(model, head, buf, list(range(V)), AdaptSettings(curriculum_steps=10, prompt_weight=0.25))
    picked = buf.chunks[:2]
    _, _, w0 = tr._batch(picked, curriculum=True)
    conf = np.concatenate([tr._confidence(c) for c in picked])
    base = np.concatenate([np.where(c.reply[: c.n], 1.0, 0.25) for c in picked])
    w0 = np.concatenate([np.array(w0[i, : c.n]) for i, c in enumerate(picked)])
    np.testing.assert_allclose(w0, base * conf, rtol=1e-5)  # alpha = 1 at step 0
    tr.steps = 10  # after the curriculum: every position by its prompt/reply weight only
    _, _, w1 = tr._batch(picked, curriculum=True)
    w1 = np.concatenate([np.array(w1[i, : c.n]) for i, c in enumerate(picked)])
    np.testing.assert_allclose(w1, base, rtol=1e-6)
