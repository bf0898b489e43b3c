"""The learned relax weight (relax_head.py, training/relax.py, `mlxspec train-relax`): the
fit finds per-position weights a static weight cannot, files round-trip atomically and a
corrupt one is one line, and relaxed verification uses the head at every position."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli_check import assert_one_line_error
from mlxspec import relax_head
from mlxspec.cli.main import cli
from mlxspec.errors import InvalidParameterError
from mlxspec.relax_head import N_FEATURES, RelaxHead, features
from mlxspec.relaxed import Relaxed
from mlxspec.sampling import SamplingParams
from mlxspec.training.relax import GRID, fit, tabulate
from test_cli import perturbed_folder
from tiny_folder import make_model_dir


def test_features_of_constructed_distributions():
    p = np.array([0.7, 0.2, 0.1, 0.0])
    q = np.array([0.1, 0.8, 0.1, 0.0])
    f = features(p, q)
    assert f.shape == (N_FEATURES,) and f[6] == 0.0  # the favourites differ
    assert f[2] == pytest.approx(np.log(0.7)) and f[4] == pytest.approx(np.log(0.2))  # p(argmax q)
    assert features(p, p)[6] == 1.0 and features(p, p)[0] == pytest.approx(features(p, p)[1])


def test_fit_learns_weights_per_position():
    """Half the positions gain from trusting the draft (J rises with w), half lose; the
    agreement feature tells them apart: the head learns high w for one, low for the other,
    beating the best static weight. Control: with the feature scrambled it cannot."""
    rng = np.random.default_rng(0)
    n = 400
    agree = rng.integers(0, 2, n).astype(float)
    feats = rng.normal(size=(n, N_FEATURES))
    feats[:, 6] = agree
    grid = np.linspace(0, 0.9, GRID)
    table = np.where(agree[:, None] == 1, grid[None, :], -grid[None, :])
    head, info = fit(feats, table, 0.9, steps=800)
    w = np.array([head.weight_of(f) for f in feats])
    assert w[agree == 1].mean() > 0.7 and w[agree == 0].mean() < 0.2
    assert info["objective"] > info["best_static_objective"] + 0.2
    scrambled = feats.copy()
    scrambled[:, 6] = rng.permutation(agree)
    _, ctl = fit(scrambled, table, 0.9, steps=800)
    assert ctl["objective"] < info["objective"] - 0.2


def test_tabulate_prefers_the_draft_only_for_acceptance():
    p, q = np.array([0.6, 0.4]), np.array([0.1, 0.9])
    _, t_reward = tabulate([p], [q], [0], reward=1.0, w_max=0.9, lam=0.0)  # y = target's favourite
    _, t_accept = tabulate([p], [q], [0], reward=0.0, w_max=0.9, lam=1.0)
    assert np.all(np.diff(t_reward[0]) < 0) and np.all(np.diff(t_accept[0]) > 0)


def test_save_load_roundtrip_and_corrupt_file(tmp_path):
    head = RelaxHead(np.arange(N_FEATURES) / 10.0, -0.5, 0.8)
    path = relax_head.relax_path(tmp_path, "some/draft")
    relax_head.save(path, head, {"steps": 3})
    back = relax_head.load(path)
    assert np.allclose(back.a, head.a, atol=1e-6) and back.c == pytest.approx(-0.5) and back.w_max == pytest.approx(0.8)
    assert json.loads(path.with_suffix(".json").read_text())["steps"] == 3
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files left
    path.write_bytes(b"junk")
    with pytest.raises(InvalidParameterError):
        relax_head.load(path)


def test_relaxed_uses_the_head_per_position():
    seen = []

    class Spy(RelaxHead):
        def weight(self, p, q):
            seen.append(1)
            return 0.0  # weight 0 everywhere: exact

    r = Relaxed.checked(Spy(np.zeros(N_FEATURES), 0.0, 0.9), 1.0)
    assert r.head is not None and r.budget == 1.0
    from mlxspec.tree import DraftTree
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 6))
    q = np.full(6, 1 / 6)
    tree = DraftTree.chain([1, 2], [q, q])
    stats = {}
    from mlxspec.verify import verify
    assert r.verify(logits, tree, [0], SamplingParams(), None, stats) == verify(logits, tree, [0], SamplingParams())
    assert len(seen) == stats["relax_checked"] - (stats["relax_checked"] > len(tree))  # every drafted position
    assert stats["relaxed_tokens"] == 0


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("relax-models")
    target = make_model_dir(root / "target", seed=0)
    return {"target": target, "draft": perturbed_folder(target, root / "draft", noise=0.3)}


def test_train_relax_cli_saves_a_usable_head(folders):
    r = CliRunner().invoke(cli, ["train-relax", "-m", str(folders["target"]), "--draft", str(folders["draft"]),
                                 "--problems", "2", "-n", "6", "--steps", "20", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    path = relax_head.relax_path(folders["target"], "draft")
    assert doc["path"] == str(path) and doc["positions"] > 0 and "train-relax: replies" in r.stderr
    head = relax_head.load(path)
    assert 0 <= head.weight(np.array([0.5, 0.5]), np.array([0.9, 0.1])) <= 0.9


def test_train_relax_bad_input_is_one_line(folders):
    assert_one_line_error(CliRunner().invoke(cli, ["train-relax", "-m", str(folders["target"]), "--draft",
                                                   "no-such-model"]), "no-such-model")


def test_eval_runs_the_learned_head(folders):
    CliRunner().invoke(cli, ["train-relax", "-m", str(folders["target"]), "--draft", str(folders["draft"]),
                             "--problems", "1", "-n", "4", "--steps", "5"])
    r = CliRunner().invoke(cli, ["eval", "-m", str(folders["target"]), "--draft", str(folders["draft"]),
                                 "--relaxed", "learned:0.5", "--arith", "1", "--code", "0", "-n", "4", "--json"])
    assert r.exit_code == 0, r.output
    assert [x["setting"] for x in json.loads(r.stdout)["rows"]] == ["exact", "relaxed learned:draft b=0.5"]
