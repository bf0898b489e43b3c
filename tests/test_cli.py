"""`mlxspec generate` through Click's runner: streams, JSON, and one-line errors."""
import json

import pytest
from click.testing import CliRunner

import mlxspec.api
from mlxspec.cli.main import cli
from mlxspec.drafters.draft_model import ModelDrafter
from mlxspec.engine import Engine
from tiny import CharTokenizer, perturbed_copy, tiny_model

V = 64


@pytest.fixture
def tiny_engine(monkeypatch):
    target = tiny_model(V, layers=2, hidden=32, scale=3.0)
    calls = {}

    def fake_load(model=None, draft="auto", **kw):
        calls["model"], calls["draft"] = model, draft
        drafter = None if draft == "none" else ModelDrafter(perturbed_copy(target, 0.02), V)
        return Engine(target, CharTokenizer(V), drafter, model_name="tiny", draft_name="d",
                      max_context=64)

    monkeypatch.setattr(mlxspec.api, "load", fake_load)
    return calls


def run(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input)


def test_generate_streams_text_to_stdout_and_stats_to_stderr(tiny_engine):
    r = run("generate", "hello world", "-n", "12", "--stats")
    assert r.exit_code == 0, r.output
    assert len(r.stdout.strip()) > 0
    assert "tok/s" in r.stderr and "tok/s" not in r.stdout


def test_generate_json_parses_and_matches_plain(tiny_engine):
    spec = json.loads(run("generate", "hello world", "-n", "20", "--json").stdout)
    plain = json.loads(run("generate", "hello world", "-n", "20", "--json", "--draft", "none").stdout)
    assert spec["tokens"] == plain["tokens"] and len(spec["tokens"]) == 20
    assert spec["stats"]["drafted"] >= 0 and "acceptance_rate" in spec["stats"]
    assert plain["stats"]["method"] == "plain"


def test_prompt_from_stdin(tiny_engine):
    r = run("generate", "-n", "5", "--json", input="from stdin")
    assert r.exit_code == 0 and json.loads(r.stdout)["generation_tokens"] == 5


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "  "], "prompt is empty"),
        (["generate", "hi", "-n", "0"], "max tokens"),
        (["generate", "hi", "-n", "-5"], "max tokens"),
        (["generate", "hi", "--temp", "-1"], "temperature"),
        (["generate", "hi", "--top-p", "2"], "top-p"),
        (["generate", "hi", "--num-draft", "500"], "num-draft"),
        (["generate", "x" * 100], "context"),
    ],
)
def test_bad_input_gives_one_line_error(tiny_engine, args, message):
    r = run(*args)
    assert r.exit_code != 0
    assert message in r.stderr
    assert "Traceback" not in r.output and len(r.stderr.strip().splitlines()) == 1


def test_empty_stdin_is_an_error(tiny_engine):
    r = run("generate", input="")
    assert r.exit_code != 0 and "prompt is empty" in r.stderr


def test_unknown_model_is_one_line_error():
    r = run("generate", "hi", "-m", "no-such-model-xyz")
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1 and "no-such-model-xyz" in r.stderr


def test_ctrl_c_stops_cleanly_and_keeps_text(tiny_engine, monkeypatch):
    real_stream = Engine.stream

    def interrupted(self, *a, **kw):
        for i, r in enumerate(real_stream(self, *a, **kw)):
            if i == 6:
                raise KeyboardInterrupt
            yield r

    monkeypatch.setattr(Engine, "stream", interrupted)
    r = run("generate", "hello", "-n", "30")
    assert r.exit_code == 130
    assert len(r.stdout.strip()) >= 1 and "Interrupted" in r.stderr and "Traceback" not in r.output


# -- the whole load path, on model folders written to disk -------------------------------
from tiny_folder import WORDS, make_model_dir  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "target": make_model_dir(root / "target", seed=0),
        "draft": make_model_dir(root / "draft", seed=0, hidden=32),  # same weights: agrees
        "other": make_model_dir(root / "other", seed=1, words=WORDS[:2] + [f"x{i}" for i in range(62)]),
    }


def test_generate_from_model_folders_is_lossless(folders):
    args = ["generate", "w1 w2 w3", "-m", str(folders["target"]), "--no-chat-template", "-n", "16", "--json"]
    spec = json.loads(run(*args, "--draft", str(folders["draft"])).stdout)
    plain = json.loads(run(*args, "--draft", "none").stdout)
    assert spec["tokens"] == plain["tokens"] and spec["draft"] != "none"


def test_draft_with_another_tokenizer_is_refused(folders):
    r = run("generate", "w1", "-m", str(folders["target"]), "--draft", str(folders["other"]))
    assert r.exit_code != 0 and "different tokenizers" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_corrupt_weights_give_one_line_error(folders, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(folders["target"], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    r = run("generate", "w1", "-m", str(broken), "--draft", "none")
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1


def test_missing_config_gives_one_line_error(folders, tmp_path):
    import shutil

    broken = tmp_path / "noconfig"
    shutil.copytree(folders["target"], broken)
    (broken / "config.json").unlink()
    r = run("generate", "w1", "-m", str(broken), "--draft", "none")
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1
