"""Relaxed verification in chat: `chat --verify relaxed` and the options screen reach the
loader, and the status bar and reply footer always say a reply was relaxed."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from test_tui import make_app, ready, store, sync, wait_until  # noqa: F401 (fixture)
from cli_check import assert_one_line_error
from mlxspec.cli.main import cli
from mlxspec.response import SpecStats
from mlxspec.tui.settings import ChatSettings
from mlxspec.tui.stats import reply_footer, reply_stats, status_line

pytestmark = pytest.mark.timeout(60)


def response(verify, extra):
    stats = SpecStats(method="draft", rounds=3, drafted=9, accepted=6, verify=verify, extra=extra)
    return SimpleNamespace(generation_tokens=12, generation_tps=5.0, prompt_tokens=4, stats=stats, peak_memory=0.1)


def test_status_bar_and_footer_show_relaxed():
    d = reply_stats(response("relaxed", {"relaxed_tokens": 3, "tv_mean": 0.0421}), None)
    assert d["verify"] == "relaxed" and d["relaxed_tokens"] == 3
    line = status_line(d, "m", "draft-model")
    assert "relaxed (3 off)" in line
    assert "relaxed (3 off)" in status_line(d, "a-long-model-name", "draft-model", "generating", width=30)
    assert "3 tokens departed" in reply_footer("length", d) and "0.042" in reply_footer("length", d)
    exact = reply_stats(response("exact", {}), None)
    assert "verify" not in exact and "relaxed" not in status_line(exact, "m", "d")  # the saved format as before


def test_settings_load_options_and_validation():
    assert ChatSettings().load_options() == {"adapt": None}
    s = ChatSettings(verify="relaxed", relax_weight=0.6)
    assert s.load_options() == {"adapt": None, "verify": "relaxed", "relax_weight": 0.6}
    assert s.engine_key() != ChatSettings().engine_key()  # a change reloads the engine
    assert "relax weight" in ChatSettings(verify="relaxed", relax_weight=1.2).validate()
    assert ChatSettings(verify="loose").validate().startswith("verify must be")


@sync
async def test_options_screen_sets_relaxed(store):  # noqa: F811
    app, engine = make_app(store)
    async with app.run_test(size=(100, 48)) as pilot:
        await ready(pilot, app)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "OptionsScreen")
        app.screen.query_one("#verify").value = "relaxed"
        app.screen.query_one("#relax_weight").value = "1.5"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "relax weight" in str(app.screen.query_one("#error").render())
        app.screen.query_one("#relax_weight").value = "0.6"
        app.screen.query_one("#relax_budget").value = "0.2"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ != "OptionsScreen" and not app.loading)
        assert app.settings.verify == "relaxed"
        assert app._loader.made["options"][-1] == {"verify": "relaxed", "relax_weight": 0.6, "relax_budget": 0.2}


def test_chat_bad_relax_option_is_one_line():
    assert_one_line_error(CliRunner().invoke(cli, ["chat", "--relax-weight", "0.4"]), "need --verify relaxed")
    assert_one_line_error(CliRunner().invoke(cli, ["chat", "--verify", "relaxed", "--relax-budget", "3"]),
                          "relax budget")
