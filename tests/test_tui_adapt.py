"""Chat and the adapting head (issue 15): idle-time training on the engine thread between
replies, stopped by a new prompt within about one optimiser step, capped per reply, off
with --no-adapt; the status bar shows "adapting…" and the head's acceptance trend."""
from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from test_tui import make_app, ready, send, store, sync, wait_until  # noqa: F401 (fixture)
from tui_fakes import FakeEngine

from mlxspec.tui.adapting import ADAPTING, IdleTrainer, sparkline, trend_text
from mlxspec.tui.settings import ChatSettings

pytestmark = pytest.mark.timeout(60)


def learning(step_s=0.02, **kw) -> FakeEngine:
    engine = FakeEngine(model_name="m", draft_name="head:adapting", **kw)
    engine.learns, engine.step_s = True, step_s
    return engine


def status(app) -> str:
    return str(app.query_one("#status").render())


@sync
async def test_status_bar_shows_adapting_and_the_trend(store):
    engine = learning(step_s=0.05, reply="a b c")  # 3 pieces: 2 of 3 drafts accepted
    app, _ = make_app(store, engine, ChatSettings(idle_adapt_s=1.5))
    async with app.run_test(size=(140, 32)) as pilot:
        await ready(pilot, app)
        assert "head adapts" in status(app)  # an adapting head before its first reply
        await send(pilot, app, "first")
        await wait_until(pilot, lambda: app.handle is None and ADAPTING in status(app))
        assert "head acc 67%" in status(app)
        await wait_until(pilot, lambda: ADAPTING not in status(app))  # the 1.5 s cap reached
        assert "head acc 67%" in status(app)  # the trend stays
        engine.reply = "a b c d"  # 3 of 4 drafts accepted
        await send(pilot, app, "second")
        await wait_until(pilot, lambda: app.handle is None and "→" in status(app))
        assert f"head acc {sparkline([2 / 3, 0.75])} 67%→75%" in status(app)
    assert {t for t, _ in engine.idle_calls} == {"mlxspec-engine"}  # serialised with generation
    busy = sum(b - a for a, b in engine.idle_steps)
    assert 0.3 < busy < 2 * (1.5 + engine.step_s)  # ran, and at most the cap per reply


@pytest.mark.parametrize("honours_stop", [True, False])
@sync
async def test_a_new_prompt_interrupts_idle_training_within_a_step(store, honours_stop):
    """The control (a trainer that ignores stop()) keeps the prompt waiting for the slice:
    the measurement can tell the two apart."""
    step = 0.25
    engine = learning(step_s=step)
    engine.honour_stop = honours_stop
    app, _ = make_app(store, engine, ChatSettings(idle_adapt_s=30.0))
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "first")
        await wait_until(pilot, lambda: app.handle is None and len(engine.idle_steps) >= 2)
        t0 = time.perf_counter()
        handle = app.engine_thread.generate([{"role": "user", "content": "next"}], temp=0.0,
                                            top_p=1.0, max_tokens=2, idle_s=0.0)
        first = handle.events.get(timeout=10)  # the next reply's first token
        waited = time.perf_counter() - t0
        assert first.response.text
        if honours_stop:
            assert waited < step + 0.3, waited
        else:
            assert waited > 1.0, waited  # the rest of a 3 s slice


@sync
async def test_no_adapt_means_no_idle_training(store):
    engine = learning()
    app, _ = make_app(store, engine, ChatSettings(adapt=False))
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "first")
        await wait_until(pilot, lambda: app.handle is None)
        await pilot.pause(0.3)
        assert ADAPTING not in status(app) and "head acc" not in status(app)
    assert app._loader.made["options"] == [{"adapt": False}]
    assert engine.idle_calls == []


@pytest.mark.parametrize("settings, why", [(ChatSettings(draft="none"), "plain"),
                                           (ChatSettings(idle_adapt_s=0.0), "no idle budget")])
@sync
async def test_nothing_trains_idle_without_a_learner_or_a_budget(store, settings, why):
    engine = learning()
    app, _ = make_app(store, engine, settings)
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "first")
        await wait_until(pilot, lambda: app.handle is None)
        await pilot.pause(0.3)
        assert ADAPTING not in status(app), why
    assert engine.idle_calls == [], why
    assert app._loader.made["options"] == [{}]  # adapt unset: the loader's own default


@sync
async def test_history_is_saved_while_the_head_adapts(store):
    engine = learning(step_s=0.05)
    app, _ = make_app(store, engine, ChatSettings(idle_adapt_s=30.0))
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot, app)
        for text in ("one", "two"):
            await send(pilot, app, text)
            await wait_until(pilot, lambda: app.handle is None and ADAPTING in status(app))
        saved = store.list()
        assert len(saved) == 1 and [m.content for m in saved[0].messages] == [
            "one", engine.reply, "two", engine.reply]
    assert engine.idle_calls  # the quit ended idle training (the app closed without waiting)


def test_options_reach_the_loader_and_mlxspec_load(store, monkeypatch):
    """chat --no-adapt/--adapt -> ChatSettings.adapt -> load options -> mlxspec.load(adapt=...),
    not the MLXSPEC_ADAPT variable."""
    import mlxspec
    from mlxspec.cli.main import cli
    from mlxspec.tui import app as app_mod
    from mlxspec.tui.backend import load_backend

    seen = {}
    monkeypatch.setattr(app_mod.ChatApp, "run", lambda self, *a, **k: seen.setdefault("app", self))
    monkeypatch.delenv("MLXSPEC_ADAPT", raising=False)
    for flag, want in (("--no-adapt", False), ("--adapt", True), (None, None)):
        seen.clear()
        r = CliRunner().invoke(cli, ["chat", "--idle-adapt", "5"] + ([flag] if flag else []))
        assert r.exit_code == 0, r.output
        s = seen["app"].settings
        assert s.adapt is want and s.idle_adapt_s == 5.0 and s.load_options() == {"adapt": want}
        assert "MLXSPEC_ADAPT" not in __import__("os").environ
    for bad in ("-1", "nan", "inf"):
        r = CliRunner().invoke(cli, ["chat", "--idle-adapt", bad])
        assert r.exit_code != 0 and "idle adaptation" in r.output and "Traceback" not in r.output
    got = {}
    monkeypatch.setattr(mlxspec, "load", lambda model, draft, **kw: got.update(kw, model=model) or object())
    load_backend("m", "head", adapt=False)
    assert got == {"model": "m", "adapt": False}
    assert ChatSettings(adapt=False).engine_key() != ChatSettings().engine_key()  # a change reloads


def test_idle_trainer_slices_and_stops():
    engine = learning(step_s=0.01)
    seen = []
    idle = IdleTrainer(lambda info, running: seen.append(running), slice_s=0.1)
    idle.arm(engine, 0.25)
    assert idle.pending and seen == [True]
    for _ in range(10):
        if idle.pending:
            idle.run_slice(engine, lambda: False)
    budgets = [b for _, b in engine.idle_calls]
    assert not idle.pending and seen[-1] is False
    assert budgets[:2] == [0.1, 0.1] and len(budgets) in (2, 3) and budgets[-1] <= 0.1  # ~0.1, 0.1, 0.05
    idle.arm(engine, 5.0)
    idle.run_slice(engine, lambda: True)  # a job is waiting: no step, no more slices
    assert not idle.pending and seen[-1] is False and engine.idle_calls[-1][1] == 0.1
    slow = learning(step_s=0.3)  # a step longer than a slice: the rest of the budget at once
    idle.arm(slow, 1.0)
    idle.run_slice(slow, lambda: False)
    assert [b for _, b in slow.idle_calls] == [0.1, 1.0] and len(slow.idle_steps) == 3
    assert not idle.pending
    engine.learns = False  # the drafter stopped adapting (e.g. reloaded with --no-adapt)
    idle.arm(engine, 10.0)
    assert not idle.pending and seen[-1] is False


def test_trend_text():
    assert trend_text(None, True) == ("", "")
    assert trend_text({"acceptance": []}, True) == (ADAPTING, "head adapts")
    assert trend_text({"acceptance": [0.123]}, False) == ("", "head acc 12%")
    word, trend = trend_text({"acceptance": [0.0] * 5 + [0.1, 0.5, 1.0]}, False)
    assert word == "" and trend == "head acc ▁▁▁▁▁▂▅█ 0%→100%"
    assert len(trend_text({"acceptance": [0.3] * 50}, False)[1]) == len("head acc ") + 8 + len(" 30%→30%")


def test_the_trend_fits_the_status_bar():
    from mlxspec.tui.stats import status_line

    stats = {"tps": 12.5, "drafted": 9, "acceptance": 0.5, "mean_len": 2.0, "rounds": 3, "speedup": 1.4}
    adapt = trend_text({"acceptance": [0.1, 0.2, 0.3]}, True)
    full = status_line(stats, "smollm2-135m-instruct", "head:adapting", "", adapt=adapt)
    assert full.endswith(f" · head acc {sparkline([0.1, 0.2, 0.3])} 10%→30% · adapting…"), full
    short = status_line(stats, "smollm2-135m-instruct", "head:adapting", "", width=60, adapt=adapt)
    assert len(short) <= 60 and "adapting…" in short and "tok/s" in short, short


def test_a_failing_trainer_or_counter_does_not_stop_the_engine_thread():
    from mlxspec.tui.engine_thread import Done, EngineThread

    engine = learning()
    calls = []

    def boom(*a):
        calls.append(1)
        raise RuntimeError("trainer exploded")

    def reply(thread, text):
        h = thread.generate([{"role": "user", "content": text}], temp=0.0, top_p=1.0, max_tokens=2, idle_s=5.0)
        events = []
        while not events or not isinstance(events[-1], Done):
            events += h.drain(timeout=5)
        return events[-1]

    t = EngineThread(lambda model, draft: engine)
    try:
        t.load(None, "auto").result(timeout=10)
        engine.idle_update = boom  # after the load's contract check
        assert reply(t, "hi").finish == "length"
        assert t.submit(lambda: t.idle.pending).result(timeout=10) is False
        assert calls == [1]  # one failed slice, then no more
        del engine.idle_update  # the fake's own again, whose slice breaks the status
        train = engine.idle_update
        engine.idle_update = lambda stop, budget: (train(stop, budget), setattr(engine, "adaptation", boom))[0]
        assert reply(t, "again").finish == "length"
        assert t.submit(lambda: "alive").result(timeout=10) == "alive"
        assert len(calls) == 2  # the status after the slice failed, then idle training ended
    finally:
        t.shutdown()


@sync
async def test_options_screen_turns_adaptation_off_and_sets_the_idle_cap(store):
    engine = learning()
    app, _ = make_app(store, engine)
    async with app.run_test(size=(100, 48)) as pilot:
        await ready(pilot, app)
        assert "head adapts" in status(app)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "OptionsScreen")
        app.screen.query_one("#idle_adapt_s").value = "-3"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "idle adaptation" in str(app.screen.query_one("#error").render())
        app.screen.query_one("#idle_adapt_s").value = "5"
        app.screen.query_one("#adapt").value = "off"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not app.loading and len(app._loader.made["options"]) == 2)
        assert app.settings.adapt is False and app.settings.idle_adapt_s == 5.0
        assert app._loader.made["options"] == [{}, {"adapt": False}]  # a change of adapt reloads
        await wait_until(pilot, lambda: "head adapts" not in status(app))
        await send(pilot, app, "hi")
        await wait_until(pilot, lambda: app.handle is None)
        await pilot.pause(0.2)
    assert engine.idle_calls == []
