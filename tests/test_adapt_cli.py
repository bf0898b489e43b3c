"""`mlxspec adapt --prompts`, `--texts` and `generate --adapt/--no-adapt` on a tiny model folder."""
import json

import pytest
from click.testing import CliRunner

from cli_check import assert_one_line_error
from mlxspec.adapt import state
from mlxspec.cli.main import cli


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    from tiny_folder import make_model_dir

    monkeypatch.delenv("MLXSPEC_ADAPT", raising=False)
    return make_model_dir(tmp_path / "tiny")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_adapt_command_starts_and_continues_a_head(folder, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("w3 w4 w5 w6\n\nw7 w8 w9 w3\n\nw10 w11 w12\n")
    r = run("adapt", "-m", folder, "--prompts", prompts, "-n", "12", "--budget", "20", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["replies"] == 3 and out["updates"] >= 1 and not out["interrupted"]
    assert "adapting: 100% (3 replies of 3 replies)" in r.stderr
    got = state.load(folder)
    assert got.counters.updates == out["updates"] and got.counters.tokens_seen == 36
    r2 = run("adapt", "-m", folder, "--prompts", prompts, "-n", "12", "--budget", "20", "--json")
    assert state.load(folder).counters.updates == out["updates"] + json.loads(r2.stdout)["updates"]


def test_generate_adapt_flags(folder):
    r = run("generate", "-m", folder, "--draft", "head", "--no-adapt", "--no-chat-template", "w3 w4")
    assert_one_line_error(r, "no draft head")
    plain = run("generate", "-m", folder, "--draft", "none", "--no-chat-template", "-n", "10", "w3 w4 w5")
    r = run("generate", "-m", folder, "--draft", "head", "--no-chat-template", "-n", "10", "w3 w4 w5")
    assert r.exit_code == 0 and r.stdout == plain.stdout
    assert state.adapted_path(folder).is_file()  # the first run made a head
    r = run("generate", "-m", folder, "--draft", "head", "--no-adapt", "--no-chat-template", "-n", "10",
            "--json", "w3 w4 w5")
    assert r.exit_code == 0 and json.loads(r.stdout)["draft"].startswith("head:adapted")


@pytest.mark.parametrize("args,msg", [
    (["--prompts", "/nonexistent/prompts"], "no such file"),
    (["--prompts", "use-session", "--budget", "nan"], "--budget"),
    (["--prompts", "use-session", "--budget", "0"], "--budget"),
    (["--prompts", "use-session", "-n", "0"], "--max-tokens"),
    (["--prompts", "use-session", "--epochs", "0"], "--epochs"),
    (["-m", "", "--prompts", "use-session"], "empty"),
])
def test_adapt_bad_input(args, msg):
    assert_one_line_error(run("adapt", *args), msg)


def test_adapt_exit_trains_the_early_exit_up_front(folder, tmp_path):
    from mlxspec.hierarchy.exit_store import exit_path

    prompts = tmp_path / "p.txt"
    prompts.write_text("w3 w4 w5 w6\n\nw7 w8 w9 w3\n\nw10 w11 w12\n")
    r = run("adapt", "-m", folder, "--prompts", prompts, "-n", "8", "--budget", "1", "--json")
    assert r.exit_code == 0 and "exit" not in json.loads(r.stdout) and not exit_path(folder).exists()
    r = run("adapt", "-m", folder, "--prompts", prompts, "-n", "24", "--budget", "1", "--exit", "--json")
    assert r.exit_code == 0, r.output
    ex = json.loads(r.stdout)["exit"]
    assert ex["rows"] > 0 and ex["path"] == str(exit_path(folder)) and exit_path(folder).is_file()


def test_adapt_texts_command(folder, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("w3 w4 w5 w6 w7 w8 w9 w3 w4 w5 w6 w7 w8 w9\n" * 4)
    r = run("adapt", "-m", folder, "--texts", notes, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["texts"]["files"] == 1 and out["texts"]["rows"] == out["texts"]["tokens"] - 1 > 10
    assert out["replies"] == 0 and "reading: 100%" in r.stderr
    got = state.load(folder)
    assert got is not None and got.counters.updates == 1 and got.counters.text_tokens == out["texts"]["tokens"]
    r = run("head", "info", "-m", folder)
    assert f"(and {out['texts']['tokens']} of files read)" in r.output


def test_adapt_texts_with_exit_teaches_the_exit_from_the_files_alone(folder, tmp_path):
    from mlxspec.hierarchy.exit_store import exit_path

    notes = tmp_path / "a.txt"
    notes.write_text("w3 w4 w5 w6 w7 w8 w9 w3 w4 w5 w6 w7 w8 w9\n" * 8)
    r = run("adapt", "-m", folder, "--texts", notes, "--exit", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["replies"] == 0 and out["exit"]["rows"] == out["texts"]["tokens"] > 64
    assert exit_path(folder).is_file()
    assert "trained exit" in run("head", "info", "-m", folder).output


@pytest.mark.parametrize("args,msg", [
    ([], "--prompts, --texts or both"),
    (["--texts", "/nonexistent/notes"], "--texts path /nonexistent/notes does not exist"),
    (["--texts", ".", "--text-tokens", "0"], "--text-tokens"),
])
def test_adapt_texts_bad_input(args, msg):
    assert_one_line_error(run("adapt", *args), msg)
