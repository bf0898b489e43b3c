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


# -- the status bar ------------------------------------------------------------------------
@pytest.mark.parametrize("width", [120, 80])
@sync
async def test_status_bar_fits_on_one_line(store, width):
    engine = FakeEngine(model_name="smollm2-135m-instruct", draft_name="head:eagle-self4")
    engine.gate, engine.hold_after = threading.Event(), 4  # mid-reply: the longest status
    app, _ = make_app(store, engine, ChatSettings(show_draft=True))
    async with app.run_test(size=(width, 32)) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "hi")
        await wait_until(pilot, lambda: app.live_stats.get("tokens", 0) >= 4)
        status = app.query_one("#status")
        text = str(status.render())
        assert "smollm2-135m-instruct" in text and "tok/s" in text and "generating" in text
        assert status.size.height == 1 and len(text) <= width - 2, text
        engine.gate.set()
        await wait_until(pilot, lambda: app.handle is None)
        assert app.query_one("#status").size.height == 1


def test_status_line_drops_the_least_useful_parts_first():
    from mlxspec.tui.stats import status_line

    stats = {"tps": 12.5, "drafted": 9, "acceptance": 0.5, "mean_len": 2.0, "draft_vocab": 8192,
             "rounds": 3, "speedup": 1.4, "fallback": True}
    full = status_line(stats, "m" * 40, "head:x", "generating…")
    assert "vocab 8192" in full and len(full) > 80
    short = status_line(stats, "m" * 40, "head:x", "generating…", width=80)
    assert len(short) <= 80 and "vocab" not in short and "12.5 tok/s" in short and "generating…" in short
    assert "(esc to stop)" not in status_line(stats, "m" * 40, "head:x", "generating… (esc to stop)", width=80)
    assert len(status_line(stats, "m" * 40, "none", "", width=5)) <= 5


# -- speedup only for speculative replies -------------------------------------------------------
@sync
async def test_no_speedup_is_shown_or_saved_without_speculation(store):
    app, engine = make_app(store, settings=ChatSettings(draft="none"))
    async with app.run_test(size=(120, 32)) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "hi")
        await wait_until(pilot, lambda: app.handle is None)
        status = str(app.query_one("#status").render())
        assert "tok/s" in status and "plain" not in status.replace("draft: none", "")
        assert "vs plain" not in app.query(AssistantMessage).last()._footer_text
    saved = store.load(app.conv.id).messages[-1].stats
    assert saved["rounds"] == 0 and "speedup" not in saved and "plain_tps" not in saved


def test_old_saved_plain_replies_show_no_speedup():
    from mlxspec.tui.app import reply_footer

    plain = {"tokens": 5, "tps": 22.0, "drafted": 0, "speedup": 1.11}  # saved before the fix
    assert "plain" not in reply_footer("stop", plain)
    assert "1.40× vs plain" in reply_footer("stop", {"tokens": 5, "tps": 28.0, "drafted": 4, "rounds": 2,
                                                     "acceptance": 0.5, "speedup": 1.4})


# -- --draft head without a head ---------------------------------------------------------------
@sync
async def test_draft_head_without_a_head_falls_back_to_auto(store):
    engine = FakeEngine()
    loader = fake_loader(engine, heads=False)
    app = ChatApp(ChatSettings(draft="head"), store=store, loader=loader)
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot, app)
        assert loader.made["drafts"] == ["head", "auto"]
        assert app.model_name == "fake-model" and app.draft_name == "draft:fake-draft"
        notes = [n.text for n in app.query(Notice)]
        assert any("no draft head trained" in n and "auto drafter" in n for n in notes), notes
        await send(pilot, app, "hi")
        await wait_until(pilot, lambda: app.handle is None)
        assert app.conv.messages[-1].content == engine.reply


# -- prefill progress ---------------------------------------------------------------------------
@sync
async def test_prefill_progress_shows_in_the_status_bar(store):
    engine = FakeEngine()
    engine.prefill, engine.prefill_gate = [(1024, 7000), (7000, 7000)], threading.Event()
    app, _ = make_app(store, engine)
    async with app.run_test(size=(120, 32)) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "a long document")
        await wait_until(pilot, lambda: "prefill 1024/7000" in str(app.query_one("#status").render()))
        assert "tok/s" in str(app.query_one("#status").render())
        engine.prefill_gate.set()
        await wait_until(pilot, lambda: app.handle is None)
        assert "prefill" not in str(app.query_one("#status").render())
        assert app.conv.messages[-1].content == engine.reply


@sync
async def test_esc_during_prefill_stops_without_waiting_for_it(store):
    engine = FakeEngine()
    engine.prefill, engine.prefill_gate = [(512, 9000), (1024, 9000), (9000, 9000)], threading.Event()
    app, _ = make_app(store, engine)
    async with app.run_test(size=(120, 32)) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "never mind")
        await wait_until(pilot, lambda: "prefill 512/9000" in str(app.query_one("#status").render()))
        await pilot.press("escape")
        engine.prefill_gate.set()
        await wait_until(pilot, lambda: app.handle is None)
        assert app.query_one("#prompt").value == "never mind" and not app.conv.messages
        assert not engine.calls  # no token was generated


# -- the contract between the chat and mlxspec --------------------------------------------------
def test_fake_and_real_backends_fit_the_contract():
    from tiny import CharTokenizer, tiny_model

    from mlxspec.engine import Engine
    from mlxspec.tui.backend import MlxspecBackend
    from mlxspec.tui.contract import ChatBackend, mismatches

    real = MlxspecBackend(Engine(tiny_model(64, scale=3.0), CharTokenizer(64), None, model_name="tiny"))
    for backend in (FakeEngine(), real):
        assert isinstance(backend, ChatBackend) and mismatches(backend) == [], mismatches(backend)
    seen = []
    out = list(real.stream_chat([{"role": "user", "content": "hi"}], temp=0.0, top_p=1.0, max_tokens=5,
                                on_prefill=lambda done, total: seen.append((done, total))))
    assert len(out) == 5 and real.model_name == "tiny" and real.draft_name == "none"
    assert seen and seen[-1][0] == seen[-1][1]  # progress reached the prompt's end
    assert real.plain_tps is None or real.plain_tps > 0
    real.reset()


def test_the_contract_check_can_fail():
    from mlxspec.tui.contract import mismatches

    class Wrong(FakeEngine):
        def stream_chat(self, messages, temp, top_p, max_tokens):  # positional, no seed/on_prefill
            return iter(())

    class Missing:
        model_name = draft_name = "x"

    assert any("stream_chat" in p for p in mismatches(Wrong()))
    assert len(mismatches(Missing())) == 5  # plain_tps, stream_chat, reset, adaptation, idle_update


@sync
async def test_a_loader_returning_a_wrong_backend_is_a_message(store):
    app = ChatApp(ChatSettings(), store=store, loader=lambda model, draft: object())
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot, app)
        errors = [n.text for n in app.query(Notice) if n.has_class("-error")]
        assert errors and "does not fit the chat" in errors[0]


def test_the_tui_uses_only_the_public_mlxspec_api():
    import ast
    from pathlib import Path

    allowed = {"mlxspec", "mlxspec.errors", "mlxspec.atomic"}
    root = Path(__file__).resolve().parent.parent / "tui"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                if name.startswith("mlxspec") and not name.startswith("mlxspec.tui"):
                    ok = name in allowed or (path.name == "backend.py" and name == "mlxspec.prompting")
                    assert ok, f"{path.name} imports {name}"
        if path.name not in ("backend.py",):
            src = path.read_text()
            for internal in ("encode_chat", ".stream(", "SamplingParams", ".tokenizer", "._prefill", "plain_step"):
                assert internal not in src, f"{path.name} uses {internal}"


def test_styles_live_in_the_tcss_file():
    from pathlib import Path

    from mlxspec.tui.screens.conversations import ConversationsScreen
    from mlxspec.tui.screens.help import HelpScreen
    from mlxspec.tui.screens.options import OptionsScreen
    from mlxspec.tui.widgets.messages import Notice as N

    root = Path(__file__).resolve().parent.parent
    assert ChatApp.CSS_PATH == "chat.tcss" and (root / "tui" / "chat.tcss").is_file()
    assert not ChatApp.CSS
    for cls in (ConversationsScreen, HelpScreen, OptionsScreen, N, AssistantMessage, UserMessage):
        assert "DEFAULT_CSS" not in vars(cls), cls.__name__
    assert '"mlxspec.tui": ["*.tcss"]' in (root / "setup.py").read_text()  # shipped in the wheel
