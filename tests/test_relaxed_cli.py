"""`--verify relaxed` on `mlxspec generate`: the options reach the engine, --json and
--stats report what relaxation cost, and bad values are one-line errors."""
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
    draft = perturbed_copy(target, 0.3, seed=5)
    calls = {}

    def fake_load(model=None, draft_name="auto", **kw):
        calls.update(kw)
        kw.pop("adapt", None)
        return Engine(target, CharTokenizer(V), ModelDrafter(draft, V, min_confidence=0.0),
                      model_name="tiny", max_context=256, adaptive=False, **kw)

    monkeypatch.setattr(mlxspec.api, "load", fake_load)
    return calls


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_relaxed_json_reports_the_divergence(tiny_engine):
    r0 = run("generate", "hello world", "-n", "60", "--json", "--no-chat-template")
    assert r0.exit_code == 0, (r0.output, r0.exception)
    exact = json.loads(r0.stdout)
    r = run("generate", "hello world", "-n", "60", "--json", "--no-chat-template", "--verify", "relaxed",
            "--relax-weight", "0.7", "--relax-budget", "1")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    s = doc["stats"]
    assert tiny_engine == {"adapt": None, "verify": "relaxed", "relax_weight": 0.7, "relax_budget": 1.0}
    assert s["verify"] == "relaxed" and s["relaxed_tokens"] > 0 and 0 < s["tv_mean"] <= s["tv_max"]
    assert exact["stats"]["verify"] == "exact" and "relaxed_tokens" not in exact["stats"]
    assert s["acceptance_rate"] > exact["stats"]["acceptance_rate"]
    assert doc["tokens"] != exact["tokens"]


def test_relaxed_weight_0_is_exact_and_stats_line_says_relaxed(tiny_engine):
    exact = json.loads(run("generate", "hello world", "-n", "40", "--json").stdout)
    zero = json.loads(run("generate", "hello world", "-n", "40", "--json", "--verify", "relaxed",
                          "--relax-weight", "0").stdout)
    assert zero["tokens"] == exact["tokens"] and zero["stats"].get("relaxed_tokens", 0) == 0
    r = run("generate", "hello world", "-n", "40", "--stats", "--verify", "relaxed")
    assert r.exit_code == 0 and "relaxed:" in r.stderr and "mean TV" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--relax-weight", "0.3"], "need --verify relaxed"),
    (["--verify", "relaxed", "--relax-weight", "1"], "relax weight"),
    (["--verify", "relaxed", "--relax-weight", "nan"], "relax weight"),
    (["--verify", "relaxed", "--relax-budget", "2"], "relax budget"),
    (["--verify", "loose"], "loose"),
])
def test_bad_relax_options_give_one_line(tiny_engine, args, message):
    assert_one_line_error(run("generate", "hi", *args), message)
