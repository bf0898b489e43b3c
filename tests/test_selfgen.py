"""Self-distillation data: batched generation that keeps the target's states, and
training a head on it."""
import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.generate import generate_step

from mlxspec.drafters.head import load_head_drafter
from mlxspec.errors import InvalidParameterError
from mlxspec.training.selfgen import generate, generate_batch, load_features
from mlxspec.training.teacher import Teacher
from mlxspec.training.train import TrainSettings, train
from tiny import CharTokenizer, tiny_model

V = 64
PROMPTS = [[5, 9, 2, 7, 1, 3, 8], [4, 4, 6], [10, 11, 12, 13, 2], [7]]


def _greedy(model, prompt, n):
    return [int(t) for t, _ in generate_step(mx.array(prompt), model, max_tokens=n)]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_batched_replies_and_states_equal_one_prompt_at_a_time(arch):
    model = tiny_model(V, layers=4, hidden=32, seed=3, arch=arch, scale=3.0)
    res = generate_batch(model, PROMPTS, exit_layer=2, max_tokens=6, stop_ids=set())
    teacher = Teacher(model, 2)
    for b, p in enumerate(PROMPTS):
        row = [int(t) for t in res["tokens"][b] if t >= 0]
        assert row[: len(p)] == p and res["prompt_len"][b] == len(p)
        assert row[len(p):] == _greedy(model, p, 6)
        h_k, h_n = teacher(mx.array([row]))
        n = len(row)
        # left padding is masked out: same states as the row alone, to float32 rounding
        assert np.allclose(res["hk"][b, :n], np.array(h_k[0]), rtol=1e-4, atol=1e-3)
        assert np.allclose(res["hn"][b, :n], np.array(h_n[0]), rtol=1e-4, atol=1e-3)
        assert not res["hk"][b, n:].any()


def test_a_row_ends_at_its_stop_token_and_the_others_go_on():
    model = tiny_model(V, layers=4, hidden=32, seed=4, scale=3.0)
    first = _greedy(model, PROMPTS[0], 1)[0]
    others = [_greedy(model, p, 5) for p in PROMPTS[1:]]
    res = generate_batch(model, PROMPTS, exit_layer=1, max_tokens=5, stop_ids={first})
    row0 = [int(t) for t in res["tokens"][0] if t >= 0]
    assert row0 == PROMPTS[0] + [first]
    for b, ref in enumerate(others, start=1):
        row = [int(t) for t in res["tokens"][b] if t >= 0]
        reply = row[len(PROMPTS[b]):]
        cut = ref.index(first) + 1 if first in ref else len(ref)
        assert reply == ref[:cut]


def test_generate_writes_shards_resumes_and_trains_a_head(tmp_path, monkeypatch):
    from mlxspec.training import selfgen

    model = tiny_model(V, layers=4, hidden=32, seed=5, scale=2.0)
    tok = CharTokenizer(V, eos=63)
    prompts = [f"prompt {c} {c}{c} abc" for c in "defghijklmnopqrs"]
    out = tmp_path / "gen"
    assert generate(model, tok, out, exit_layer=2, prompts=prompts, max_tokens=12, batch=4) == 4
    assert sorted(p.name for p in out.glob("shard-*")) == [f"shard-{i:04d}" for i in range(4)]
    assert len(list(out.glob("reply-*.txt"))) == len(prompts)
    # a lost shard is generated again, and only that one
    import shutil

    shutil.rmtree(out / "shard-0002")
    calls = []
    real = selfgen.generate_batch
    monkeypatch.setattr(selfgen, "generate_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    generate(model, tok, out, exit_layer=2, prompts=prompts, max_tokens=12, batch=4)
    assert len(calls) == 1 and (out / "shard-0002" / "meta.json").is_file()

    # a second prompt set writes its own shard series into the same folder; both load
    more = [f"other {c}{c} xyz" for c in "tuvw"]
    assert generate(model, tok, out, exit_layer=2, prompts=more, max_tokens=12, batch=4,
                    series="-more") == 1
    assert (out / "shard-more-0000" / "meta.json").is_file() and (out / "shard-0000").is_dir()

    from mlxspec.runtime.layered import LayeredModel

    data = load_features(out, LayeredModel(model).fingerprint(), 2)
    assert len(data) == len(prompts) + len(more)
    prompts = prompts + more
    assert np.all(data.weights[data.tokens < 0] == 0) and np.all(data.weights[data.replies] == 1)

    settings = TrainSettings(exit_layer=2, vocab=20, steps=4, batch=2, lr=1e-3, warmup=1, eval_windows=3,
                             feature_input=True, features=str(out))
    res = train(model, tok, tmp_path / "m", settings, progress=False)
    assert res is not None and res.settings["corpus"]["documents"] == len(prompts)
    # held-out replies are scored on reply positions only
    eval_rows = np.sort(np.random.default_rng(0).permutation(len(prompts))[:3])
    assert res.metrics["eval_tokens"] == int(data.replies[eval_rows].sum())
    assert load_head_drafter(model, tok, tmp_path / "m").head.config.feature_input

    with pytest.raises(InvalidParameterError, match="layer-2 states"):
        train(model, tok, tmp_path / "m2", TrainSettings(exit_layer=1, vocab=20, steps=1, batch=2, eval_windows=3,
                                                         features=str(out)), progress=False)
    other = tiny_model(V, layers=4, hidden=32, seed=6)
    with pytest.raises(InvalidParameterError, match="another model"):
        train(other, tok, tmp_path / "m3", TrainSettings(exit_layer=2, vocab=20, steps=1, batch=2, eval_windows=3,
                                                         features=str(out)), progress=False)


def test_loss_ignores_positions_of_weight_zero():
    from mlxspec.head.model import new_head
    from mlxspec.head.objective import head_loss as _loss

    model = tiny_model(V, layers=4, hidden=32, seed=7)
    head = new_head(model, 2)
    h_k = mx.random.normal((2, 12, 32), key=mx.random.key(1))
    t_hn = mx.random.normal((2, 12, 32), key=mx.random.key(2))
    core_w = model.model.embed_tokens.weight[:20]
    w = mx.array(np.r_[np.ones(8), np.zeros(4)][None].repeat(2, 0).astype(np.float32))
    a, _ = _loss(head, h_k, t_hn, core_w, 1.0, weights=w)
    # later positions changed: causal attention and zero weight leave the loss alone
    t2 = mx.concatenate([t_hn[:, :8], 5 * t_hn[:, 8:]], axis=1)
    h2 = mx.concatenate([h_k[:, :8], -h_k[:, 8:]], axis=1)
    b, _ = _loss(head, h2, t2, core_w, 1.0, weights=w)
    c, _ = _loss(head, h2, t2, core_w, 1.0)
    assert abs(a.item() - b.item()) < 1e-5 and abs(a.item() - c.item()) > 1e-3
    # so training may cut a batch's padded tail (also with the unrolled feature passes)
    d, _ = _loss(head, h_k[:, :8], t_hn[:, :8], core_w, 1.0, weights=w[:, :8])
    fhead = new_head(model, 2, feature_input=True)
    e, _ = _loss(fhead, h_k, t_hn, core_w, 1.0, weights=w, unroll=2)
    f, _ = _loss(fhead, h_k[:, :8], t_hn[:, :8], core_w, 1.0, weights=w[:, :8], unroll=2)
    assert abs(a.item() - d.item()) < 1e-5 and abs(e.item() - f.item()) < 1e-5


def test_unrolled_loss_trains_on_the_heads_own_features():
    from mlxspec.head.model import new_head
    from mlxspec.head.objective import head_loss as _loss

    model = tiny_model(V, layers=4, hidden=32, seed=8)
    h_k = mx.random.normal((1, 10, 32), key=mx.random.key(3))
    t_hn = mx.random.normal((1, 10, 32), key=mx.random.key(4))
    core_w = model.model.embed_tokens.weight[:20]
    plain = new_head(model, 2)
    assert _loss(plain, h_k, t_hn, core_w, 1.0, unroll=2)[0].item() == pytest.approx(
        _loss(plain, h_k, t_hn, core_w, 1.0, unroll=1)[0].item())  # no feature input: one pass
    feat = new_head(model, 2, feature_input=True)
    feat.fuse.weight = mx.random.normal(feat.fuse.weight.shape, key=mx.random.key(5)) * 0.1
    one = _loss(feat, h_k, t_hn, core_w, 1.0, unroll=1)[0].item()
    two = _loss(feat, h_k, t_hn, core_w, 1.0, unroll=2)[0].item()
    assert abs(one - two) > 1e-4
