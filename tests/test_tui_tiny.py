"""The chat app on the real Engine class with tiny random models (no downloads)."""
from __future__ import annotations

import asyncio
import threading

import pytest

from mlxspec.tui.app import ChatApp
from mlxspec.tui.widgets.messages import AssistantMessage
from mlxspec.tui.settings import ChatSettings
from mlxspec.tui.store import ConversationStore

pytestmark = pytest.mark.timeout(120)
V = 64


def tiny_loader(made: dict):
    def load(model, draft="auto"):
        # runs on the engine thread: MLX objects are created where they are used
        from tiny import CharTokenizer, perturbed_copy, tiny_model
        from mlxspec.drafters.draft_model import ModelDrafter
        from mlxspec.engine import Engine
        from mlxspec.tui.backend import MlxspecBackend

        target = tiny_model(V, scale=3.0)
        drafter = None if draft == "none" else ModelDrafter(perturbed_copy(target, 0.02), V)
        engine = Engine(target, CharTokenizer(V), drafter, model_name="tiny",
                        draft_name="draft:tiny" if drafter else "none", num_draft=4, adaptive=False)
        made["engine"], made["thread"] = engine, threading.current_thread().name
        made["prefills"] = []
        original = engine._prefill

        def counting_prefill(prompt, on_prefill=None):  # records (prompt length, tokens already cached)
            from mlxspec.engine import _common_prefix
            made["prefills"].append((len(prompt), _common_prefix(engine._cached, prompt)))
            return original(prompt, on_prefill)

        engine._prefill = counting_prefill
        return MlxspecBackend(engine)  # the chat's real adapter over the real Engine
    return load


async def wait_until(pilot, cond, timeout=60.0):
    waited = 0.0
    while not cond():
        assert waited < timeout, "condition not met in time"
        await pilot.pause(0.05)
        waited += 0.05
    await pilot.pause()


def test_real_engine_class_streams_and_reuses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXSPEC_DATA_DIR", str(tmp_path))
    made: dict = {}

    async def main():
        app = ChatApp(ChatSettings(max_tokens=40), store=ConversationStore(), loader=tiny_loader(made))
        async with app.run_test(size=(100, 32)) as pilot:
            await wait_until(pilot, lambda: not app.loading)
            assert app.model_name == "tiny" and app.draft_name == "draft:tiny"
            for text in ("hello there", "and again"):
                app.query_one("#prompt").value = text
                await pilot.press("enter")
                await wait_until(pilot, lambda: app.handle is None)
                reply = app.query(AssistantMessage).last()
                assert reply.content and app.conv.messages[-1].finish in ("stop", "length")
            assert any(from_draft for _, from_draft in reply.spans)  # drafts were accepted
            status = str(app.query_one("#status").render())
            assert "tok/s" in status and "accept" in status
            return app

    app = asyncio.run(main())
    assert made["thread"] == "mlxspec-engine"
    assert len(app.conv.messages) == 4
    (n1, reused1), (n2, reused2) = made["prefills"]
    assert reused1 == 0
    # turn 2 re-sends the history, but only the new turn is prefilled
    assert reused2 >= n1 and n2 - reused2 < n2 - n1 + 2
