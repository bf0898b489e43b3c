"""`mlxspec generate` through Click's runner: streams, JSON, and one-line errors."""
import json

import pytest
from click.testing import CliRunner

import mlxspec.api
from mlxspec.cli.main import cli
from mlxspec.drafters.draft_model import ModelDrafter
from mlxspec.engine import Engine
from cli_check import assert_one_line_error
from tiny import CharTokenizer, perturbed_copy, tiny_model

V = 64


@pytest.fixture
def tiny_engine(monkeypatch):
    target = tiny_model(V, layers=2, hidden=32, scale=3.0)
    calls = {}

    def fake_load(model=None, draft="auto", **kw):
        calls["model"], calls["draft"] = model, draft
        drafter = None if draft == "none" else ModelDrafter(perturbed_copy(target, 0.02), V)
        # a fixed draft length: the governor's choices follow timings, and these tests
        # are about the CLI (the JSON test needs rounds that keep and rounds that reject)
        return Engine(target, CharTokenizer(V), drafter, model_name="tiny", draft_name="d",
                      max_context=64, adaptive=False)

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
    # the perturbed draft is right sometimes, wrong sometimes: both verify paths ran
    s = spec["stats"]
    assert 0 < s["accepted"] < s["drafted"] and s["rounds"] > 0, s
    assert s["acceptance_rate"] == round(s["accepted"] / s["drafted"], 4)
    assert plain["stats"]["method"] == "plain" and plain["stats"]["drafted"] == 0


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
    assert_one_line_error(run(*args), message)


def test_bad_option_type_is_clicks_usage_error(tiny_engine):
    assert_one_line_error(run("generate", "hi", "-n", "many"), "'many' is not a valid integer")


def test_one_line_check_rejects_a_traceback_and_a_second_line(tiny_engine, monkeypatch):
    """Control: the check fails on an uncaught exception and on a two-line message."""
    def boom(*a, **kw):
        raise ZeroDivisionError("a bug, not bad input")

    monkeypatch.setattr(mlxspec.api, "load", boom)
    with pytest.raises(AssertionError, match="uncaught ZeroDivisionError"):
        assert_one_line_error(run("generate", "hi"))
    from mlxspec.errors import MlxspecError

    def two_lines(*a, **kw):
        raise MlxspecError("first line\nsecond line")

    monkeypatch.setattr(mlxspec.api, "load", two_lines)
    with pytest.raises(AssertionError, match="expected one stderr line"):
        assert_one_line_error(run("generate", "hi"))


def test_empty_stdin_is_an_error(tiny_engine):
    assert_one_line_error(run("generate", input=""), "prompt is empty")


def test_unknown_model_is_one_line_error():
    assert_one_line_error(run("generate", "hi", "-m", "no-such-model-xyz"), "no-such-model-xyz")


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


def perturbed_folder(src, dst, noise: float, seed: int = 1):
    """A copy of a model folder whose weights carry noise: a draft that is right often, not
    always, so verification both accepts and rejects (and rewinds) on the real load path."""
    import shutil

    import mlx.core as mx

    shutil.copytree(src, dst)
    weights = mx.load(str(dst / "model.safetensors"))
    mx.random.seed(seed)
    mx.save_safetensors(str(dst / "model.safetensors"),
                        {k: v + noise * mx.random.normal(v.shape) for k, v in weights.items()})
    return dst


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    target = make_model_dir(root / "target", seed=0)
    return {
        "target": target,
        "draft": perturbed_folder(target, root / "draft", noise=0.01),
        "other": make_model_dir(root / "other", seed=1, words=WORDS[:2] + [f"x{i}" for i in range(62)]),
    }


def test_generate_from_model_folders_is_lossless(folders):
    """Several prompts, so that whatever the drafting policy, some drafts are kept and some
    rejected (the rewind runs) on the real load path, and each output is plain output."""
    drafted = accepted = 0
    for prompt in ("w40", "w10 w11 w12 w13", "w5 w9", "w1 w2 w3"):
        args = ["generate", prompt, "-m", str(folders["target"]), "--no-chat-template", "-n", "32", "--json"]
        spec = json.loads(run(*args, "--draft", str(folders["draft"])).stdout)
        plain = json.loads(run(*args, "--draft", "none").stdout)
        assert spec["tokens"] == plain["tokens"], prompt
        assert spec["stats"]["method"].startswith("draft:draft") and plain["stats"]["method"] == "plain"
        drafted, accepted = drafted + spec["stats"]["drafted"], accepted + spec["stats"]["accepted"]
    assert 0 < accepted < drafted, (accepted, drafted)


def test_draft_with_another_tokenizer_is_refused(folders):
    r = run("generate", "w1", "-m", str(folders["target"]), "--draft", str(folders["other"]))
    assert_one_line_error(r, "different tokenizers")


def test_corrupt_weights_give_one_line_error(folders, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(folders["target"], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert_one_line_error(run("generate", "w1", "-m", str(broken), "--draft", "none"))


def test_missing_config_gives_one_line_error(folders, tmp_path):
    import shutil

    broken = tmp_path / "noconfig"
    shutil.copytree(folders["target"], broken)
    (broken / "config.json").unlink()
    assert_one_line_error(run("generate", "w1", "-m", str(broken), "--draft", "none"))
