"""Pilot tests of the chat app on a fake engine (no MLX work, fast)."""
from __future__ import annotations

import asyncio
import functools
import inspect
import threading

import pytest

from tui_fakes import FakeEngine, fake_loader

from mlxspec.tui.app import ChatApp
from mlxspec.tui.widgets.messages import AssistantMessage, Notice, UserMessage
from mlxspec.tui.settings import ChatSettings
from mlxspec.tui.store import Conversation, ConversationStore, Message

pytestmark = pytest.mark.timeout(60)


def sync(fn):
    """Run an async test with asyncio.run (no pytest-asyncio needed)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))
    wrapper.__signature__ = inspect.signature(fn)
    return wrapper


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXSPEC_DATA_DIR", str(tmp_path))
    return ConversationStore()


async def wait_until(pilot, cond, timeout=10.0, step=0.02):
    waited = 0.0
    while not cond():
        if waited > timeout:
            raise AssertionError("condition not met in time")
        await pilot.pause(step)
        waited += step
    await pilot.pause()


def make_app(store, engine=None, settings=None, **kw):
    engine = engine or FakeEngine()
    app = ChatApp(settings or ChatSettings(), store=store, loader=fake_loader(engine), **kw)
    return app, engine


async def ready(pilot, app):
    await wait_until(pilot, lambda: not app.loading)


async def send(pilot, app, text):
    app.query_one("#prompt").value = text
    await pilot.press("enter")


@sync
async def test_send_streams_markdown_and_saves(store):
    engine = FakeEngine()
    engine.gate = threading.Event()  # hold the reply so we can look at it mid-stream
    app, _ = make_app(store, engine)
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot, app)
        assert "fake-model" in str(app.query_one("#status").render())
        await send(pilot, app, "hello there")
        assert app.handle is not None
        engine.gate.set()
        await wait_until(pilot, lambda: app.handle is None)
        reply = app.query(AssistantMessage).last()
        assert reply.content == engine.reply
        assert reply.spans[0] == ["Hello! Here ", True]  # draft/target runs kept
        assert any(not d for _, d in reply.spans)
        status = str(app.query_one("#status").render())
        assert "42.0 tok/s" in status and "accept" in status and "vocab 49152" in status
        assert "2.10× plain" in status  # 42 tok/s against a plain 20 tok/s
        # saved on disk, both turns
        saved = store.list()
        assert len(saved) == 1 and [m.role for m in saved[0].messages] == ["user", "assistant"]
        assert saved[0].messages[1].finish == "stop"
        assert saved[0].model == "fake-model"
    # every load and generation ran on the one engine thread
    assert engine.threads == {"mlxspec-engine"}


@sync
async def test_stream_is_visible_before_the_reply_ends(store):
    engine = FakeEngine(delay=0.01)
    engine.gate, engine.hold_after = threading.Event(), 3  # 3 pieces, then hold the reply
    app, _ = make_app(store, engine)
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "hi")
        await wait_until(pilot, lambda: app.current is not None and len(app.current.content) > 0)
        partial = app.current.content
        assert app.handle is not None and partial != engine.reply
        engine.gate.set()
        await wait_until(pilot, lambda: app.handle is None)
        assert app.query(AssistantMessage).last().content == engine.reply


@sync
async def test_multi_turn_reuses_the_cached_prefix(store):
    app, engine = make_app(store)
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "first")
        await wait_until(pilot, lambda: app.handle is None)
        await send(pilot, app, "second")
        await wait_until(pilot, lambda: app.handle is None)
    first, second = engine.calls
    # the whole history is sent, and everything up to the new turn was already cached
    assert second["reused"] >= len(first["tokens"]) + len(engine.reply)
    text = "".join(chr(t) for t in second["tokens"])
    assert "first" in text and engine.reply in text and "second" in text


@sync
async def test_stop_keeps_the_partial_reply(store):
    engine = FakeEngine(delay=0.1)
    app, _ = make_app(store, engine)
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "tell me")
        await wait_until(pilot, lambda: app.current is not None and len(app.current.content) > 0)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.handle is None)
        msgs = app.conv.messages
        assert msgs[-1].role == "assistant" and msgs[-1].finish == "stopped"
        assert 0 < len(msgs[-1].content) < len(engine.reply)
        assert engine.closed == 1  # the generator was closed: clean cancel
        assert "stopped" in app.query(AssistantMessage).last()._footer_text
        # the engine stays usable
        engine.delay = 0
        await send(pilot, app, "again")
        await wait_until(pilot, lambda: app.handle is None)
        assert app.conv.messages[-1].content == engine.reply
        assert store.load(app.conv.id).messages[1].finish == "stopped"


@sync
async def test_stop_before_first_token_gives_the_prompt_back(store):
    app, engine = make_app(store)
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot, app)
        busy = threading.Event()
        app.engine_thread.submit(lambda: busy.wait(5))  # keep the engine thread busy
        await send(pilot, app, "never mind")
        await pilot.press("escape")
        busy.set()
        await wait_until(pilot, lambda: app.handle is None)
        assert not app.conv.messages and not app.query(UserMessage)
        assert app.query_one("#prompt").value == "never mind"
        assert not engine.calls  # generation never started


@sync
async def test_load_error_is_a_message_and_the_app_recovers(store):
    app, engine = make_app(store, settings=ChatSettings(model="missing"))
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot, app)
        errors = [n.text for n in app.query(Notice) if n.has_class("-error")]
        assert errors and "unknown model 'missing'" in errors[0]
        # sending with no model: an error message, not a crash; the prompt comes back
        await send(pilot, app, "hello?")
        await wait_until(pilot, lambda: app.handle is None)
        assert app.query_one("#prompt").value == "hello?"
        assert "no model is loaded" in app.query(Notice).last().text
        # pick a working model in Options
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "OptionsScreen")
        app.screen.query_one("#model").value = "good-model"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not app.loading and app.model_name == "good-model")
        await send(pilot, app, "hello")
        await wait_until(pilot, lambda: app.handle is None)
        assert app.conv.messages[-1].content == engine.reply


@pytest.mark.parametrize("prompt, expected", [
    ("please explode", "generation failed: RuntimeError: kernel exploded"),
    ("oom now", "out of memory"),
])
@sync
async def test_generation_errors_are_messages(store, prompt, expected):
    app, engine = make_app(store)
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot, app)
        await send(pilot, app, prompt)
        await wait_until(pilot, lambda: app.handle is None)
        note = app.query(Notice).last()
        assert note.has_class("-error") and expected in note.text
        assert app.conv.messages[-1].finish == "error"  # partial reply kept
        await send(pilot, app, "fine now")
        await wait_until(pilot, lambda: app.handle is None)
        assert app.conv.messages[-1].content == engine.reply


@sync
async def test_options_change_sampling_system_and_drafter(store):
    app, engine = make_app(store)
    async with app.run_test(size=(100, 40)) as pilot:
        await ready(pilot, app)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "OptionsScreen")
        scr = app.screen
        scr.query_one("#temp").value = "0.7"
        scr.query_one("#top_p").value = "0.9"
        scr.query_one("#max_tokens").value = "5"
        scr.query_one("#system").text = "You are terse."
        scr.query_one("#draft").value = "none"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not app.loading and app.draft_name == "none")
        assert app.settings.temp == 0.7 and app.settings.max_tokens == 5
        await send(pilot, app, "hi")
        await wait_until(pilot, lambda: app.handle is None)
    call = engine.calls[-1]
    assert call["temp"] == 0.7 and call["top_p"] == 0.9 and call["max_tokens"] == 5
    assert "".join(chr(t) for t in call["tokens"]).startswith("<system>You are terse.")
    assert app.conv.messages[-1].finish == "length"


@sync
async def test_options_reject_bad_values(store):
    app, _ = make_app(store)
    async with app.run_test(size=(100, 40)) as pilot:
        await ready(pilot, app)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "OptionsScreen")
        app.screen.query_one("#temp").value = "-1"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "OptionsScreen"
        assert "temperature" in str(app.screen.query_one("#error").render())
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ != "OptionsScreen")
        assert app.settings.temp == 0.0


@sync
async def test_resume_from_the_saved_list_and_continue(store):
    old = Conversation(system="Be kind.", model="fake-model", messages=[
        Message("user", "what is 2+2?"), Message("assistant", "**4**", [["**4**", True]])])
    store.save(old)
    app, engine = make_app(store)
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot, app)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "ConversationsScreen")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.conv.id == old.id)
        assert [m.text for m in app.query(UserMessage)] == ["what is 2+2?"]
        assert app.query(AssistantMessage).last().content == "**4**"
        await send(pilot, app, "and 3+3?")
        await wait_until(pilot, lambda: app.handle is None)
    text = "".join(chr(t) for t in engine.calls[-1]["tokens"])
    assert text.startswith("<system>Be kind.") and "what is 2+2?" in text and "**4**" in text
    assert len(store.load(old.id).messages) == 4


@sync
async def test_resume_at_start_and_export(store, tmp_path):
    conv = Conversation(messages=[Message("user", "hi"), Message("assistant", "```py\nx = 1\n```")])
    store.save(conv)
    app, _ = make_app(store, conversation=store.load(conv.id))
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot, app)
        assert app.query(AssistantMessage).last().content.startswith("```py")
        await pilot.press("ctrl+e")
        await pilot.pause()
    exported = tmp_path / "exports" / f"{conv.id}.md"
    md = exported.read_text()
    assert "## You\n\nhi" in md and "## Assistant\n\n```py\nx = 1\n```" in md


@sync
async def test_draft_colouring_toggle(store):
    app, _ = make_app(store)
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "hi")
        await wait_until(pilot, lambda: app.handle is None)
        reply = app.query(AssistantMessage).last()
        md, tokens = reply.query_one("Markdown"), reply.query_one(".tokens")
        assert md.display and not tokens.display
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert tokens.display and not md.display
        assert "■ draft" in str(app.query_one("#status").render())
        styles = {str(span.style) for span in tokens.render().spans}
        assert len(styles) == 2  # draft and target runs coloured differently
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert md.display and not tokens.display


@sync
async def test_help_and_new_chat(store):
    app, _ = make_app(store)
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot, app)
        await pilot.press("f1")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "HelpScreen")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ != "HelpScreen")
        await send(pilot, app, "hi")
        await wait_until(pilot, lambda: app.handle is None)
        first = app.conv.id
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.conv.id != first and not app.conv.messages and not app.query(UserMessage)
        assert len(store.list()) == 1  # empty conversations are not saved


@sync
async def test_quit_mid_reply_saves_the_partial_reply(store):
    engine = FakeEngine(delay=0.1)
    app, _ = make_app(store, engine)
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "long one")
        await wait_until(pilot, lambda: app.current is not None and len(app.current.content) > 0)
        await pilot.press("ctrl+q")
    saved = store.load(app.conv.id)
    assert saved.messages[-1].finish == "stopped" and saved.messages[-1].content
