"""`mlxspec train-head` through the CLI on a tiny model folder."""
import json

import pytest
from click.testing import CliRunner

from cli_check import assert_one_line_error
from mlxspec.cli.main import cli


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tiny_folder import make_model_dir

    return make_model_dir(tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture()
def corpus(tmp_path):
    import numpy as np

    f = tmp_path / "c.txt"
    f.write_text(" ".join(f"w{i}" for i in np.random.default_rng(0).integers(2, 64, 2000)))
    return f


def run(*args):
    return CliRunner().invoke(cli, ["train-head", *map(str, args)])


def test_train_head_writes_head_and_json(model_dir, corpus):
    r = run("-m", model_dir, "--corpus", corpus, "--steps", 3, "--batch", 2, "--seq-len", 8,
            "--exit-layer", 1, "--vocab", 20, "--corpus-tokens", 800)
    assert r.exit_code == 0, r.stderr + r.stdout
    out = json.loads(r.stdout)
    head = model_dir / "heads" / "default.safetensors"
    assert out["path"] == str(head) and head.is_file()
    settings = json.loads(head.with_suffix(".json").read_text())
    assert settings["exit_layer"] == 1 and settings["vocab"] == 20 and settings["steps"] == 3
    assert "teacher windows" in r.stderr or "3/3" in r.stderr  # progress on stderr


@pytest.mark.parametrize("args,msg", [
    (["--exit-layer", 2], "exit layer"),
    (["--corpus", "/nonexistent/x"], "does not exist"),
    (["--name", "../evil"], "head name"),
    (["--steps", 0], "steps must be positive"),
    (["--eval-windows", 0], "eval-windows must be positive"),
    (["--init-from", "no-such-head"], "no head file"),
    (["--unroll", 0], "unroll must be in 1..4"),
    (["--features", "/nonexistent/dir"], "no folder"),
    (["--features", "/tmp", "--corpus", "/tmp"], "either --corpus or --features"),
])
def test_train_head_bad_input(model_dir, args, msg):
    assert_one_line_error(run("-m", model_dir, *args), msg)
