"""Snapshots of the main screens (pytest-textual-snapshot). Refresh after a deliberate UI
change with: pytest tests/test_tui_snapshots.py --snapshot-update"""
from __future__ import annotations

import json
import time

import pytest
from textual.widgets import Input

from tui_fakes import FakeEngine, fake_loader

from mlxspec.tui.app import ChatApp
from mlxspec.tui.settings import ChatSettings
from mlxspec.tui.store import Conversation, ConversationStore, Message, atomic_write_text

SIZE = (100, 32)
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXSPEC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield ConversationStore()
    monkeypatch.delenv("TZ")
    time.tzset()


def app_for(store, **kw):
    return ChatApp(ChatSettings(**kw), store=store, loader=fake_loader(FakeEngine(delay=0)))


async def settle(pilot, cond, timeout=10.0):
    waited = 0.0
    while not cond() and waited < timeout:
        await pilot.pause(0.02)
        waited += 0.02
    # A blinking cursor would make the screenshot depend on timing.
    for field in pilot.app.query(Input):
        field.cursor_blink = False
    await pilot.pause(0.1)


def chatted(prompt="Show me a Python function"):
    async def run_before(pilot):
        app = pilot.app
        await settle(pilot, lambda: not app.loading)
        app.query_one("#prompt").value = prompt
        await pilot.press("enter")
        await settle(pilot, lambda: app.handle is None)
    return run_before


def test_main_screen_after_a_reply(snap_compare, store):
    assert snap_compare(app_for(store), terminal_size=SIZE, run_before=chatted())


def test_draft_colouring(snap_compare, store):
    async def run_before(pilot):
        await chatted()(pilot)
        await pilot.press("ctrl+t")
        await pilot.pause(0.1)
    assert snap_compare(app_for(store), terminal_size=SIZE, run_before=run_before)


def test_options_screen(snap_compare, store):
    async def run_before(pilot):
        await settle(pilot, lambda: not pilot.app.loading)
        await pilot.press("ctrl+o")
        await pilot.pause(0.2)
    app = app_for(store, model="smollm2-135m-instruct", temp=0.7, system="You are terse.")
    assert snap_compare(app, terminal_size=(100, 36), run_before=run_before)


def test_help_screen(snap_compare, store):
    async def run_before(pilot):
        await settle(pilot, lambda: not pilot.app.loading)
        await pilot.press("f1")
        await pilot.pause(0.2)
    assert snap_compare(app_for(store), terminal_size=SIZE, run_before=run_before)


def test_saved_conversations_screen(snap_compare, store):
    for i, title in enumerate(["Fix my regex", "Haiku about MLX"]):
        conv = Conversation(id=f"20250101-12000{i}-abcd", created=1735732800 + i * 3600,
                            updated=1735732800 + i * 3600, model="smollm2-135m-instruct",
                            messages=[Message("user", title), Message("assistant", "…")])
        atomic_write_text(store.path(conv.id), json.dumps(conv.to_json()))

    async def run_before(pilot):
        await settle(pilot, lambda: not pilot.app.loading)
        await pilot.press("ctrl+r")
        await pilot.pause(0.2)
    assert snap_compare(app_for(store), terminal_size=SIZE, run_before=run_before)


def test_load_error_message(snap_compare, store):
    async def run_before(pilot):
        await settle(pilot, lambda: not pilot.app.loading)
    assert snap_compare(app_for(store, model="missing"), terminal_size=SIZE, run_before=run_before)
