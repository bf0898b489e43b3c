"""Persistence of adaptation: round trip (head loadable by load_head_drafter, optimiser,
counters, token counts), kill -9 at seeded random moments of a save loop, and the
`mlxspec head info|reset` commands."""
import json
import os

import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner
from mlx.utils import tree_flatten

from cli_check import assert_one_line_error
from mlxspec.adapt import Adapter, state
from mlxspec.cli.main import cli
from mlxspec.drafters.head import load_head_drafter
from mlxspec.engine import Engine
from mlxspec.sampling import SamplingParams
from test_faults import kill_trials


@pytest.fixture()
def folder(tmp_path):
    from tiny_folder import make_model_dir

    return make_model_dir(tmp_path / "tiny")


def _load(folder):
    from mlxspec.loading import load_model

    t = load_model(str(folder))
    return t.model, t.tokenizer


def feed(adapter, model, tokenizer, prompts=3, n=16):
    """A few greedy replies recorded through a runner of the adapter's head."""
    from mlxspec.drafters.head_runner import HeadTargetRunner

    rng = np.random.default_rng(0)
    for _ in range(prompts):
        runner = HeadTargetRunner(model, adapter.head)
        adapter.attach(runner)
        prompt = [int(t) for t in rng.integers(2, 64, 6)]
        logits = runner.prefill(prompt)
        seq = prompt + [int(mx.argmax(logits).item())]
        adapter.reset_tokens(seq)
        for _ in range(n):
            nxt = int(mx.argmax(runner.forward([seq[-1]])[-1]).item())
            seq.append(nxt)
            adapter.extend_tokens([nxt])
        adapter.end_reply(0.5)


def test_round_trip_and_the_head_drafts(folder):
    model, tok = _load(folder)
    a = Adapter.open(model, folder, tok, exit_layer=1, new_head_kw={"kind": "block"})
    assert a.counters.base is None and a.counters.updates == 0
    feed(a, model, tok)
    out = a.update(10.0, max_steps=3)
    assert out["steps"] == 3
    path = state.adapted_path(folder)
    assert path.is_file() and path.with_suffix(".json").is_file()
    got = state.load(folder)
    c = got.counters
    assert (c.updates, c.steps, c.gen, c.acceptance) == (1, 3, 1, [0.5, 0.5, 0.5])
    assert c.tokens_seen == 3 * 17 and c.buffer["rows"] == len(a.buffer)
    mine = dict(tree_flatten(a.head.parameters()))
    assert all(np.array_equal(np.array(mine[k]), np.array(v)) for k, v in got.head_file.weights.items())
    opt = a.trainer.optimizer_state()
    assert set(got.optimizer_state) == set(opt)
    assert all(np.array_equal(np.array(opt[k]), np.array(v)) for k, v in got.optimizer_state.items())
    np.testing.assert_allclose(got.counts, a.buffer.counts.values())
    # reopened, it continues: same weights, counters and optimiser step
    b = Adapter.open(model, folder, tok)
    assert b.counters.updates == 1 and b.trainer.steps == 3
    assert int(b.trainer.opt.state["step"].item()) == 3
    feed(b, model, tok, prompts=1)
    b.update(10.0, max_steps=2)
    assert state.load(folder).counters.updates == 2 and state.load(folder).counters.steps == 5
    assert sorted(p.name for p in state.state_dir(folder).iterdir()) == [
        "counts-000002.npy", "opt-000002.safetensors", "state-000002.json"]  # old generation gone
    # the adapted head is an ordinary head file: it drafts, losslessly
    d = load_head_drafter(model, tok, folder, path)
    assert d.name == "head:adapted"
    prompt = [5, 9, 2, 7]
    plain = [r.token for r in Engine(model, tok).stream(prompt, SamplingParams(), max_tokens=20)]
    spec = list(Engine(model, tok, d, num_draft=3, adaptive=False).stream(prompt, SamplingParams(), max_tokens=20))
    assert [r.token for r in spec] == plain and spec[-1].stats.rounds > 0


def test_starts_from_a_trained_head(folder):
    model, tok = _load(folder)
    a = Adapter.open(model, folder, tok, exit_layer=1)
    feed(a, model, tok, prompts=1)
    a.update(5.0, max_steps=1, save=False)
    from mlxspec.head.io import heads_dir, save_head

    save_head(heads_dir(folder) / "mine.safetensors", a.head, a.ranking, a.fingerprint, {"vocab": 20})
    b = Adapter.open(model, folder, tok)
    assert b.counters.base == "mine" and b.core_size == 20 and b.trainer.steps == 0


SAVE_LOOP = """
import os
from pathlib import Path
import numpy as np
from mlxspec.adapt import Adapter
from mlxspec.loading import load_model
folder = Path(os.environ["FOLDER"])
t = load_model(str(folder))
a = Adapter.open(t.model, folder, t.tokenizer, exit_layer=1)
seq = [int(x) for x in np.random.default_rng(0).integers(2, 64, 40)]
a.reset_tokens(seq)
print("ready", flush=True)
while True:
    a.counters.acceptance.append(a.counters.updates)  # reply i's "acceptance" is i
    a.counters.updates += 1
    a.extend_tokens([5] * 10)  # tokens_seen goes up by 10 per save (1 from the reset)
    a.buffer.counts._s[:] = a.counters.updates
    a.buffer.counts._w = 1.0 / a.buffer.counts.gamma
    a.head.norm.weight = a.head.norm.weight * 0 + a.counters.updates
    a.save()
"""


def test_kill_at_random_moments_leaves_the_last_good_state(folder):
    model, tok = _load(folder)
    env = dict(os.environ, FOLDER=str(folder))
    seen = []

    def check(trial):
        got = state.load(folder)
        if got is None:  # killed before the first commit
            assert not state.adapted_path(folder).exists()
            seen.append(0)
            return
        c = got.counters
        n = c.updates
        # head, counters and token counts are of one and the same save
        assert c.tokens_seen == 10 * n + 1 and c.acceptance == list(range(n))
        assert float(np.array(got.head_file.weights["norm.weight"]).mean()) == n
        assert got.counts is not None and np.allclose(got.counts, n)
        assert got.head_file.settings["adapt_gen"] == c.gen
        load_head_drafter(model, tok, folder, state.adapted_path(folder))  # loadable
        seen.append(n)
        state.reset(folder)  # the next child starts over (a fresh head, counters 0)

    counts = kill_trials("adapt state save", SAVE_LOOP, check, env=env, trials=8, max_delay=0.6,
                         watch=[state.state_dir(folder), folder / "heads"])
    assert counts["kills"] == 8 and max(seen) > 0


# -- the CLI -----------------------------------------------------------------------------
def head_cli(*args):
    return CliRunner().invoke(cli, ["head", *map(str, args)])


def test_head_info_and_reset(folder):
    r = head_cli("info", "-m", folder, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["adapted"], out["tokens_seen"], out["updates"], out["acceptance"], out["heads"]) == (False, 0, 0, [], [])
    model, tok = _load(folder)
    a = Adapter.open(model, folder, tok, exit_layer=1)
    feed(a, model, tok, prompts=2)
    a.update(5.0, max_steps=2)
    (folder / "heads" / "other.safetensors").write_bytes(b"x" * 10)  # another head, listed with its size
    out = json.loads(head_cli("info", "-m", folder, "--json").stdout)
    assert out["adapted"] and out["tokens_seen"] == 2 * 17 and out["updates"] == 1 and out["acceptance"] == [0.5, 0.5]
    names = {h["name"]: h for h in out["heads"]}
    assert set(names) == {"adapted", "other"} and names["other"]["bytes"] == 10 and names["adapted"]["adapted"]
    text = head_cli("info", "-m", folder)
    assert text.exit_code == 0 and "adapted" in text.stdout and "34 tokens seen, 1 updates" in text.stdout
    assert out["kind"] == "linear" and "(linear head)" in text.stdout and "1 refits" in text.stdout
    r = head_cli("reset", "-m", folder)
    assert r.exit_code == 0 and r.stdout.startswith("removed the adapted head") and len(r.stdout.splitlines()) == 1
    assert not state.adapted_path(folder).exists() and not state.state_dir(folder).exists()
    assert (folder / "heads" / "other.safetensors").is_file() and (folder / "model.safetensors").is_file()
    r = head_cli("reset", "-m", folder)
    assert r.exit_code == 0 and "nothing removed" in r.stdout


def test_reset_never_leaves_the_model_folder(folder, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "adapted.safetensors").write_bytes(b"keep me")
    (folder / "heads").symlink_to(outside, target_is_directory=True)
    assert_one_line_error(head_cli("reset", "-m", folder), "outside the model folder")
    assert (outside / "adapted.safetensors").read_bytes() == b"keep me"


@pytest.mark.parametrize("args,msg", [
    (["info", "-m", "/nonexistent/model"], "unknown model"),
    (["reset", "-m", "/nonexistent/model"], "unknown model"),
    (["info", "-m", ""], "empty"),
    (["reset", "-m", "/"], "not a model folder"),
    (["info", "-m", "no-such-registry-model-q4"], "unknown model"),
])
def test_head_bad_input(args, msg):
    assert_one_line_error(head_cli(*args), msg)


def test_corrupt_adapted_head_is_one_line_in_info(folder):
    (folder / "heads").mkdir()
    state.adapted_path(folder).write_bytes(b"garbage")
    r = head_cli("info", "-m", folder, "--json")
    assert r.exit_code == 0 and "corrupt" in json.loads(r.stdout)["error"]
