"""`mlxspec chat --draft head` on the real smollm2-135m, through the real loader: the new
(linear) head learns after each reply (as the reply ends, or while the chat is idle),
the status bar shows its trend, and the reply after it learnt is still the target's own
greedy reply. The model folder is a temp copy (links),
so the adapted head lands there, never in models/."""
from __future__ import annotations

import asyncio

import pytest

from conftest import REPO

from mlxspec.tui.adapting import trend_text
from mlxspec.tui.app import ChatApp
from mlxspec.tui.settings import ChatSettings
from mlxspec.tui.store import ConversationStore

MODEL_DIR = REPO / "models" / "smollm2-135m-instruct"
pytestmark = [
    pytest.mark.real,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not (MODEL_DIR / "config.json").exists(), reason="smollm2-135m-instruct not pulled"),
]
N = 12


async def wait_until(pilot, cond, timeout=120.0):
    waited = 0.0
    while not cond():
        assert waited < timeout, "condition not met in time"
        await pilot.pause(0.05)
        waited += 0.05
    await pilot.pause()


def updates(backend) -> int:
    return (backend.adaptation() or {}).get("updates", 0)


def test_chat_head_adapts_while_idle_and_stays_lossless(tmp_path, monkeypatch):
    import mlxspec
    from mlxspec.engine import Engine

    monkeypatch.setenv("MLXSPEC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MLXSPEC_ADAPT", raising=False)
    folder = tmp_path / "smol"
    folder.mkdir()
    for f in MODEL_DIR.iterdir():
        if f.is_file() and not f.name.startswith("."):
            (folder / f.name).symlink_to(f)
    prompts = ["Write a Python function that adds two numbers.", "Now one that multiplies them."]
    seen, slices = [], []

    async def main():
        app = ChatApp(ChatSettings(model=str(folder), draft="head", max_tokens=N, idle_adapt_s=60.0),
                      store=ConversationStore())
        async with app.run_test(size=(160, 32)) as pilot:
            await wait_until(pilot, lambda: not app.loading)
            assert app.draft_name.startswith("head:adapting"), app.draft_name
            backend = app.engine_thread.engine
            train = backend.idle_update
            backend.idle_update = lambda stop, budget: slices.append(train(stop, budget)) or slices[-1]
            for text in prompts:
                before = updates(backend)
                app.query_one("#prompt").value = text
                await pilot.press("enter")
                # the head learnt from the reply: a linear head (the kind a new head is)
                # refits as the reply ends, a block head trains while the person reads
                await wait_until(pilot, lambda: app.handle is None and updates(backend) > before)
                await pilot.pause(0.2)
                seen.append((updates(backend) - before, str(app.query_one("#status").render())))
            return app, app.engine_thread.engine._engine, backend

    app, engine, engine_backend = asyncio.run(main())
    app.engine_thread._thread.join(60)  # idle training ends within a step; then MLX is ours
    assert not app.engine_thread._thread.is_alive()
    info = engine_backend.adaptation()
    (steps1, status1), (steps2, status2) = seen
    assert steps1 > 0 and steps2 > 0, seen  # an update after each reply
    # the trend the counters give (a new head's replies may have no drafts: "head adapts")
    assert trend_text(info, False)[1] in status2 and "head " in status2, status2
    plain = Engine(engine.model, engine.tokenizer)  # the same weights, no drafter
    msgs = [{"role": m.role, "content": m.content} for m in app.conv.messages[:3]]
    ref = "".join(r.text for r in mlxspec.stream_chat(plain, msgs, max_tokens=N, temp=0.0))
    assert app.conv.messages[3].content == ref
    assert (folder / "heads" / "adapted.safetensors").is_file()
