"""End to end: the real `mlxspec chat` in tmux on smollm2-135m (send a prompt, read the screen).

Needs tmux and models/smollm2-135m-instruct (make demo pulls it); skipped otherwise.
Generous timeouts: a shared 2-core CI machine may decode at ~1 token/s.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "models" / "smollm2-135m-instruct"

pytestmark = [
    pytest.mark.real,
    pytest.mark.timeout(900),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
    pytest.mark.skipif(not (MODEL_DIR / "config.json").exists(),
                       reason="smollm2-135m-instruct not installed (mlxspec models pull)"),
]


def tmux(*args: str, check: bool = True) -> str:
    out = subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise RuntimeError(f"tmux {args[0]} failed: {out.stderr.strip()}")
    return out.stdout


def screen(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def alive(session: str) -> bool:
    return subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode == 0


def wait_for(what: str, cond, timeout: float, session: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if alive(session) and "could not load the model" in screen(session):
            raise AssertionError(f"the app could not load the model:\n{screen(session)}")
        time.sleep(0.5)
    last = screen(session) if alive(session) else "(session gone)"
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; screen:\n{last}")


def saved_reply(data: Path):
    files = list((data / "conversations").glob("*.json"))
    if not files:
        return None
    doc = json.loads(files[0].read_text())
    msgs = [m for m in doc["messages"] if m["role"] == "assistant" and m.get("finish")]
    return msgs[-1] if msgs else None


def test_chat_in_tmux_replies_and_saves(tmp_path):
    session = f"mlxspec-e2e-{os.getpid()}"
    data = tmp_path / "data"
    cmd = " ".join([
        "env", f"MLXSPEC_DATA_DIR={shlex.quote(str(data))}", "HF_HUB_OFFLINE=1", "TERM=xterm-256color",
        shlex.quote(sys.executable), "-c", shlex.quote("from mlxspec.cli.main import main; main()"),
        "chat", "--max-tokens", "24", "--draft", "auto",
    ])
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", "-c", str(REPO), cmd)
    try:
        # loaded: the status bar names the model and no longer says loading
        wait_for("the model to load",
                 lambda: "smollm2-135m-instruct · draft" in screen(session)
                 and "loading" not in screen(session), 300, session)
        tmux("send-keys", "-t", session, "What is the capital of France?", "Enter")
        wait_for("the reply to finish", lambda: saved_reply(data) is not None, 600, session)
        time.sleep(1.0)  # let the last frame reach the terminal
        text = screen(session)
        reply = saved_reply(data)
        assert "What is the capital of France?" in text
        assert reply["content"].strip(), reply
        words = [w for w in re.findall(r"[A-Za-z]{3,}", reply["content"])]
        assert any(w in text for w in words), (words, text)  # the reply is on screen
        assert re.search(r"\d+ tokens at [\d.]+ tok/s", text)  # per-reply stats
        status = [ln for ln in text.splitlines() if "smollm2-135m-instruct · draft" in ln]
        assert status and re.search(r"[\d.]+ tok/s", status[-1]), text  # live status bar
        tmux("send-keys", "-t", session, "C-q")
        wait_for("the app to quit", lambda: not alive(session), 60, session)
    finally:
        if alive(session):
            tmux("kill-session", "-t", session, check=False)
    doc = json.loads(next((data / "conversations").glob("*.json")).read_text())
    assert [m["role"] for m in doc["messages"]] == ["user", "assistant"]
    assert doc["model"] == "smollm2-135m-instruct"
