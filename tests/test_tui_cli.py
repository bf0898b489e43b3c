"""`mlxspec chat` flags: settings validation, --list, --export, --resume (app not run)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from mlxspec.cli.main import cli
from mlxspec.tui.store import Conversation, ConversationStore, Message


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXSPEC_DATA_DIR", str(tmp_path))
    return ConversationStore()


@pytest.fixture
def captured(monkeypatch):
    """Replace ChatApp.run so the command's wiring is checked without a terminal."""
    from mlxspec.tui import app as app_mod

    seen = {}

    def fake_run(self, *a, **k):
        seen["app"] = self

    monkeypatch.setattr(app_mod.ChatApp, "run", fake_run)
    return seen


def run(*args):
    return CliRunner().invoke(cli, ["chat", *args])


def test_flags_become_settings(store, captured):
    r = run("-m", "some-model", "--draft", "none", "--temp", "0.5", "--top-p", "0.8",
            "-n", "64", "--system", "Be brief.", "--show-draft")
    assert r.exit_code == 0, r.output
    s = captured["app"].settings
    assert (s.model, s.draft, s.temp, s.top_p, s.max_tokens, s.system, s.show_draft) == (
        "some-model", "none", 0.5, 0.8, 64, "Be brief.", True)


@pytest.mark.parametrize("args, message", [
    (["--temp", "-1"], "temperature"),
    (["--top-p", "0"], "top-p"),
    (["-n", "0"], "max tokens"),
    (["--resume", "nope"], "no saved conversation 'nope'"),
    (["--temp", "nan"], "temperature must be a finite number"),  # passed validate() before
    (["-m", "a\nb"], "model contains a control character"),
])
def test_bad_flags_are_one_line(store, captured, args, message):
    r = run(*args)
    assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output
    assert "app" not in captured


def test_list_export_resume(store, captured, tmp_path):
    assert "no saved conversations" in run("--list").output
    conv = Conversation(model="smollm2-135m-instruct", system="S",
                        messages=[Message("user", "hello there"), Message("assistant", "hi")])
    store.save(conv)
    out = run("--list").output
    assert conv.id in out and "hello there" in out
    dest = tmp_path / "out.md"
    r = run("--export", conv.id, "-o", str(dest))
    assert r.exit_code == 0 and dest.read_text().startswith("# hello there")
    r = run("--resume", conv.id)
    assert r.exit_code == 0, r.output
    app = captured["app"]
    assert app.conv.id == conv.id and app.settings.model == "smollm2-135m-instruct"
    assert app.settings.system == "S"
