"""The chat's idle adaptation on the real classes: a tiny random target with the real
AdaptiveHeadDrafter (+ prompt lookup) behind the real MlxspecBackend, no downloads."""
from __future__ import annotations

import asyncio

import pytest

from mlxspec.tui.adapting import ADAPTING
from mlxspec.tui.app import ChatApp
from mlxspec.tui.settings import ChatSettings
from mlxspec.tui.store import ConversationStore

pytestmark = pytest.mark.timeout(120)
V = 64


def adaptive_loader(folder, made: dict):
    def load(model, draft="auto", **options):
        from tiny import CharTokenizer, tiny_model
        from mlxspec.adapt import Adapter
        from mlxspec.drafters.adaptive import AdaptiveHeadDrafter
        from mlxspec.drafters.compose import Composite
        from mlxspec.drafters.lookup import LookupDrafter
        from mlxspec.engine import Engine
        from mlxspec.tui.backend import MlxspecBackend

        made["options"] = options
        target = tiny_model(V, layers=4, hidden=32, seed=1, scale=3.0)
        adapter = Adapter.open(target, folder, None, exit_layer=2, core_size=24)
        d = AdaptiveHeadDrafter(target, adapter, tail_capacity=8, num_neighbours=2, min_confidence=0.0,
                                learn=options.get("adapt", True) is not False)
        engine = Engine(target, CharTokenizer(V), Composite(d, [LookupDrafter()]), model_name="tiny",
                        num_draft=4, adaptive=False)
        backend = MlxspecBackend(engine)
        train, made["slices"] = backend.idle_update, []

        def idle_update(stop, budget_s):  # records every idle slice's result
            made["slices"].append(train(stop, budget_s))
            return made["slices"][-1]

        backend.idle_update = idle_update
        made.update(target=target, drafter=d, backend=backend)
        return backend
    return load


async def wait_until(pilot, cond, timeout=60.0):
    waited = 0.0
    while not cond():
        assert waited < timeout, "condition not met in time"
        await pilot.pause(0.05)
        waited += 0.05
    await pilot.pause()


def chat(tmp_path, monkeypatch, settings, prompts, during=None):
    monkeypatch.setenv("MLXSPEC_DATA_DIR", str(tmp_path / "data"))
    made: dict = {}

    async def main():
        app = ChatApp(settings, store=ConversationStore(), loader=adaptive_loader(tmp_path / "model", made))
        async with app.run_test(size=(140, 32)) as pilot:
            await wait_until(pilot, lambda: not app.loading)
            for text in prompts:
                app.query_one("#prompt").value = text
                await pilot.press("enter")
                await wait_until(pilot, lambda: app.handle is None)
                if during:
                    await during(pilot, app, made)
        return app

    return asyncio.run(main()), made


def test_idle_training_changes_the_head_and_replies_stay_lossless(tmp_path, monkeypatch):
    import mlxspec
    from tiny import CharTokenizer
    from mlxspec.engine import Engine

    seen, done = [], [0]  # statuses after each reply's idle training; slices seen so far
    # the block head trains by optimiser steps while the person reads; a linear head
    # refits once per reply, at its end, and has nothing left for idle time
    monkeypatch.setattr("mlxspec.adapt.adapter.NEW_HEAD_KIND", "block")

    async def during(pilot, app, made):
        slices = made["slices"]
        await wait_until(pilot, lambda: len(slices) > done[0] and not app.engine_thread.idle.pending)
        await wait_until(pilot, lambda: ADAPTING not in str(app.query_one("#status").render()))
        seen.append((sum(o["steps"] for o in slices[done[0]:]), str(app.query_one("#status").render())))
        done[0] = len(slices)

    app, made = chat(tmp_path, monkeypatch, ChatSettings(max_tokens=24, idle_adapt_s=1.0),
                     ["hello there", "and again"], during)
    assert made["options"] == {}
    assert all(steps > 0 for steps, _ in seen), seen  # idle training after each reply
    assert all("head acc" in s for _, s in seen) and "→" in seen[-1][1]  # two replies' rates
    a = made["drafter"].adapter
    assert len(a.counters.acceptance) == 2 and a.counters.updates >= 3  # an idle update per reply + reply slices
    # The second reply was drafted by a head that idle training changed: still the target's.
    plain = Engine(made["target"], CharTokenizer(V))
    msgs = [{"role": m.role, "content": m.content} for m in app.conv.messages[:3]]
    ref = "".join(r.text for r in mlxspec.stream_chat(plain, msgs, max_tokens=24, temp=0.0))
    assert app.conv.messages[3].content == ref
    # stop() is checked before every optimiser step of the real trainer
    calls = []
    out = made["backend"].idle_update(lambda: calls.append(1) or len(calls) > 3, 30.0)
    assert out["steps"] == 3


def test_no_adapt_reaches_the_loader_and_nothing_trains(tmp_path, monkeypatch):
    seen = []

    async def during(pilot, app, made):
        await pilot.pause(0.5)
        seen.append(str(app.query_one("#status").render()))

    app, made = chat(tmp_path, monkeypatch, ChatSettings(max_tokens=16, adapt=False), ["hello"], during)
    assert made["options"] == {"adapt": False}
    assert "head acc" not in seen[0] and "head adapts" not in seen[0] and ADAPTING not in seen[0], seen
    a = made["drafter"].adapter
    assert made["backend"].adaptation() is None and a.trainer.steps == 0 and a.counters.updates == 0
    assert made["backend"].idle_update(lambda: False, 5.0)["steps"] == 0


def test_drafters_that_do_not_learn_have_no_adaptation():
    """A draft model, prompt lookup, a frozen head, plain: no status, no idle steps."""
    from tiny import CharTokenizer, perturbed_copy, tiny_model
    from mlxspec.drafters.compose import Composite
    from mlxspec.drafters.draft_model import ModelDrafter
    from mlxspec.drafters.head import HeadDrafter
    from mlxspec.drafters.lookup import LookupDrafter
    from mlxspec.engine import Engine
    from mlxspec.head.model import new_head
    from mlxspec.tui.backend import MlxspecBackend

    target = tiny_model(V, layers=4, hidden=32, seed=1, scale=3.0)
    frozen = HeadDrafter(target, new_head(target, 2), core_ids=range(24), tail_capacity=8, num_neighbours=2)
    for drafter in (ModelDrafter(perturbed_copy(target, 0.02), V), Composite(None, [LookupDrafter()]),
                    Composite(frozen, [LookupDrafter()]), None):
        backend = MlxspecBackend(Engine(target, CharTokenizer(V), drafter, adaptive=False))
        list(backend.stream_chat([{"role": "user", "content": "hi"}], temp=0.0, top_p=1.0, max_tokens=4))
        assert backend.adaptation() is None, drafter
        assert backend.idle_update(lambda: False, 1.0) == {"steps": 0, "seconds": 0.0}
