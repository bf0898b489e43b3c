"""Saved conversations: round trip, listing, Markdown export, and crash safety."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mlxspec.tui import store as store_mod
from mlxspec.tui.store import Conversation, ConversationStore, Message, to_markdown


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXSPEC_DATA_DIR", str(tmp_path))
    return ConversationStore()


def test_data_dir_env_override(store, tmp_path):
    assert store.root == tmp_path / "conversations"


def test_round_trip_list_and_prefix(store):
    a = Conversation(system="sys", model="m", messages=[Message("user", "héllo"),
                     Message("assistant", "hi", [["h", True], ["i", False]], {"tps": 3.0}, "stop")])
    store.save(a)
    time.sleep(0.01)
    b = Conversation(messages=[Message("user", "second")])
    store.save(b)
    got = store.load(a.id)
    assert got.to_json() == a.to_json()
    assert [c.id for c in store.list()] == [b.id, a.id]  # newest first
    store.save(Conversation(id="zz-unique-1", messages=[Message("user", "p")]))
    assert store.load("zz-uni").id == "zz-unique-1"  # a unique prefix is enough
    with pytest.raises(KeyError):
        store.load("nope")
    with pytest.raises(KeyError):
        store.path("../evil")


def test_markdown_export(store, tmp_path):
    conv = Conversation(system="Be brief.", messages=[
        Message("user", "code?"), Message("assistant", "```py\nprint(1)\n```", finish="stopped")])
    md = to_markdown(conv)
    assert md.startswith("# code?")
    assert "## System\n\nBe brief." in md
    assert "## Assistant (stopped)\n\n```py\nprint(1)\n```" in md
    out = store.export_markdown(conv, tmp_path / "x.md")
    assert out.read_text() == md


def test_failed_write_keeps_the_old_file(store, monkeypatch):
    conv = Conversation(messages=[Message("user", "keep me")])
    path = store.save(conv)
    before = path.read_text()
    conv.messages.append(Message("assistant", "new"))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(store_mod.os, "replace", boom)
    with pytest.raises(OSError):
        store.save(conv)
    assert path.read_text() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp left


def test_unreadable_files_are_listed_by_name_and_loading_one_names_it(store):
    good = Conversation(messages=[Message("user", "ok")])
    store.save(good)
    (store.root / "broken.json").write_text("{not json")
    (store.root / "wrong.json").write_text('{"no": "id"}')
    listed = {c.id: c for c in store.list()}
    assert set(listed) == {good.id, "broken", "wrong"}
    assert not listed[good.id].unreadable
    assert "broken.json" in listed["broken"].title and "not valid JSON" in listed["broken"].unreadable
    assert "wrong.json" in listed["wrong"].title
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON \(line 1"):
        store.load("broken")


def test_chat_list_shows_unreadable_files_and_resume_names_the_file(store):
    from click.testing import CliRunner

    from mlxspec.cli.main import cli

    store.save(Conversation(id="good-1", messages=[Message("user", "hello there")]))
    (store.root / "broken.json").write_text("{not json")
    r = CliRunner().invoke(cli, ["chat", "--list"])
    assert r.exit_code == 0
    assert "good-1" in r.output and "hello there" in r.output
    assert "broken" in r.output and "unreadable: broken.json" in r.output
    r = CliRunner().invoke(cli, ["chat", "--export", "broken"])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "broken.json is not valid JSON" in r.output and len(r.output.strip().splitlines()) == 1


def test_temp_files_of_a_killed_save_are_ignored_and_cleaned(store):
    c = Conversation(id="keep", messages=[Message("user", "x")])
    store.save(c)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = store.root / f".keep.json.tmp-{dead}-abcd"
    stale.write_text('{"half')
    old_style = store.root / ".keep.json.x1y2.tmp"  # the previous writer's names
    old_style.write_text('{"half')
    os.utime(old_style, (time.time() - 3600, time.time() - 3600))
    assert [x.id for x in store.list()] == ["keep"]
    assert not stale.exists() and not old_style.exists()


KILLER = r"""
import sys, time
from mlxspec.tui.store import Conversation, ConversationStore, Message
s = ConversationStore()
c = Conversation(id="victim", messages=[Message("user", "x" * 200000)])
s.save(c)
print("ready", flush=True)
i = 0
while True:
    i += 1
    c.messages.append(Message("assistant", str(i) * 50000))
    s.save(c)
"""


def test_kill_during_saves_never_corrupts(store, tmp_path):
    env = dict(os.environ, MLXSPEC_DATA_DIR=str(tmp_path))
    for delay in (0.05, 0.2, 0.4):
        p = subprocess.Popen([sys.executable, "-c", KILLER], env=env, stdout=subprocess.PIPE)
        try:
            assert p.stdout.readline().strip() == b"ready"
            time.sleep(delay)
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
        doc = json.loads((store.root / "victim.json").read_text())  # always whole JSON
        assert doc["messages"][0]["content"] == "x" * 200000
        assert [c.id for c in store.list()] == ["victim"]
