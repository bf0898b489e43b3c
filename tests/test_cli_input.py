"""`mlxspec generate` / `train-head` at the input boundary: undecodable bytes, a closed
pipe, out-of-range seeds, --num-draft 0, prefill progress, Ctrl-C, usage errors."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import mlxspec.api
from mlxspec.cli.main import cli
from tiny_folder import make_model_dir

pytestmark = pytest.mark.timeout(120)
ENTRY = "from mlxspec.cli.main import main; main()"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(make_model_dir(tmp_path_factory.mktemp("m") / "tiny"))


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def gen(folder, *args, input=None):
    return run("generate", "-m", folder, "--draft", "none", "--no-chat-template", "-n", 4, *args,
               input=input)


def error_lines(r) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]


def subprocess_run(args, stdin=b"", **kw):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", ENTRY, *args], input=stdin, capture_output=True,
                          env=env, timeout=120, **kw)


# -- 1: bytes that are not UTF-8 ------------------------------------------------------
def test_non_utf8_stdin_is_decoded_with_replacement(folder):
    r = gen(folder, "--json", input=b"w1 w2 caf\xe9")
    assert r.exit_code == 0, r.output
    assert r.exception is None
    assert r.stderr.count("not valid UTF-8") == 1
    assert json.loads(r.stdout)["generation_tokens"] == 4


def test_non_utf8_argv_is_decoded_with_replacement(folder):
    r = gen(folder, "--json", os.fsdecode(b"w1 \xff w2"))  # what Python makes of such argv
    assert r.exit_code == 0 and r.exception is None, r.output
    assert r.stderr.count("not valid UTF-8") == 1


def test_binary_stdin_never_raises(folder):
    data = bytes(range(256)) * 2
    r = gen(folder, input=data)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    if r.exit_code:
        assert len(error_lines(r)) == 1


def test_real_process_with_latin1_stdin(folder):
    p = subprocess_run(["generate", "-m", folder, "--draft", "none", "--no-chat-template", "-n", "3"],
                       stdin=b"w1 caf\xe9")
    assert p.returncode == 0, p.stderr.decode()
    assert b"Traceback" not in p.stderr and p.stderr.count(b"not valid UTF-8") == 1


# -- 2: the reader closes the pipe ------------------------------------------------------
def test_closed_stdout_pipe_exits_quietly_with_141(folder):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.Popen([sys.executable, "-c", ENTRY, "generate", "-m", folder, "--draft", "none",
                          "--no-chat-template", "-n", "60", "w1 w2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdout.close()  # like `| head -c 0`: the first write finds no reader
    err = p.stderr.read()
    assert p.wait(timeout=120) == 141, err.decode()
    assert err == b"", err.decode()


# -- 3: seeds -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", ["-1", str(2**32), str(10**30)])
def test_out_of_range_seed_is_one_line_before_loading(seed):
    r = run("generate", "hi", "-m", "no-such-model", "--seed", seed)
    assert r.exit_code != 0 and isinstance(r.exception, SystemExit)
    assert error_lines(r) == [f"Error: seed must be in 0..{2**32 - 1}, got {seed}"]


def test_largest_seed_works(folder):
    assert gen(folder, "--seed", 2**32 - 1, "--temp", "0.8", "w1").exit_code == 0


# -- 4: --num-draft 0 -------------------------------------------------------------------------
def test_num_draft_zero_loads_no_drafter(folder, monkeypatch):
    seen = []
    real = mlxspec.api.load
    monkeypatch.setattr(mlxspec.api, "load", lambda m, d="auto", **k: seen.append(d) or real(m, d, **k))
    r = run("generate", "-m", folder, "--draft", folder, "--num-draft", 0, "-n", 4, "--stats",
            "--no-chat-template", "w1 w2")
    assert r.exit_code == 0, r.output
    assert seen == ["none"]
    assert "no drafter loaded" in r.stderr and "draft plain" in r.stderr


# -- 8: prefill progress ----------------------------------------------------------------------
def test_generate_reports_prefill_progress_when_the_engine_can(folder, monkeypatch):
    real = mlxspec.api.stream_generate

    def with_progress(engine, prompt, on_prefill=None, **kw):
        for done in (1024, 2048, 3000):  # as the engine calls it, chunk by chunk
            on_prefill(done, 3000)
        yield from real(engine, prompt, **kw)

    monkeypatch.setattr(mlxspec.api, "stream_generate", with_progress)
    r = gen(folder, "w1 w2")
    assert r.exit_code == 0, r.output
    assert "prefill 3000/3000 tokens" in r.stderr and "tok/s" in r.stderr
    assert "prefill" not in r.stdout


def test_prefill_progress_only_for_long_or_slow_prompts():
    from mlxspec.cli.common import PrefillProgress

    out = io.StringIO()
    p = PrefillProgress(out, long_prompt=1024, after_s=1.5)
    p(100, 200)
    p(200, 200)
    assert out.getvalue() == ""  # short and quick: silent
    p = PrefillProgress(out, long_prompt=1024, after_s=1.5, every_s=0)
    p(512, 7000)
    p(7000, 7000)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("prefill 512/7000 tokens") and "ETA" in lines[0]
    assert lines[-1].startswith("prefill 7000/7000 tokens") and "ETA" not in lines[-1]
    slow = PrefillProgress(io.StringIO(), long_prompt=10**9, after_s=0.0)
    slow(5, 10)
    assert slow.shown  # a short prompt that is slow shows up too


# -- 9: Ctrl-C ----------------------------------------------------------------------------------
def test_ctrl_c_while_loading_is_one_line(monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(mlxspec.api, "load", interrupted)
    r = run("generate", "hi")
    assert r.exit_code == 130 and error_lines(r) == ["Interrupted."]


def test_ctrl_c_in_train_head_is_one_line_and_keeps_the_old_head(folder, tmp_path, monkeypatch):
    from pathlib import Path

    import numpy as np

    from mlxspec.training import train as train_mod

    corpus = tmp_path / "c.txt"
    corpus.write_text(" ".join(f"w{i}" for i in np.random.default_rng(0).integers(2, 64, 2000)))
    heads = Path(folder) / "heads"
    heads.mkdir(exist_ok=True)
    old = heads / "mine.safetensors"
    old.write_bytes(b"an older head")
    real = train_mod.train

    def ctrl_c_at_step_2(*a, on_step=None, **k):
        def step(i, loss):
            if on_step:
                on_step(i, loss)
            if i == 2:
                raise KeyboardInterrupt
        return real(*a, on_step=step, **k)

    monkeypatch.setattr(train_mod, "train", ctrl_c_at_step_2)
    r = run("train-head", "-m", folder, "--corpus", corpus, "--steps", 6, "--batch", 2, "--seq-len", 8,
            "--exit-layer", 1, "--vocab", 20, "--corpus-tokens", 800, "--name", "mine")
    assert r.exit_code == 130, r.output
    said = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if "nterrupted" in ln]
    assert len(said) == 1, r.stderr
    assert old.read_bytes() == b"an older head"


# -- usage errors are one line too -----------------------------------------------------------
@pytest.mark.parametrize("args", [["generate", "-n", "many"], ["--bogus"], ["nosuchcommand"],
                                  ["generate", "a", "b\nc"]])
def test_usage_errors_are_one_line(args):
    r = run(*args)
    assert r.exit_code == 2 and len(error_lines(r)) == 1, r.stderr
    assert error_lines(r)[0].startswith("Error: ") and "--help" in error_lines(r)[0]


def test_model_name_with_a_newline_is_one_line():
    r = run("generate", "hi", "-m", "a\nb")
    assert r.exit_code == 1 and error_lines(r) == ["Error: model contains a control character: 'a\\nb'"]


def test_a_bug_in_the_real_program_is_one_line():
    # An unexpected exception (a stand-in bug in load) still prints one line, no traceback.
    code = ("import mlxspec.api as a\n"
            "def boom(*x, **k): raise ZeroDivisionError('a bug')\n"
            "a.load = boom\n" + ENTRY)
    p = subprocess.run([sys.executable, "-c", code, "generate", "hi"], capture_output=True, timeout=60)
    assert p.returncode == 1 and b"Traceback" not in p.stderr
    assert p.stderr.decode().strip().splitlines() == [
        "Error: internal error: ZeroDivisionError: a bug (MLXSPEC_DEBUG=1 shows the traceback)"]


@pytest.mark.parametrize("args, message", [
    (["--temp", "nan"], "temperature must be a finite number"),
    (["--temp", "1e-320"], "temperature must be 0 (greedy) or at least 1e-06"),  # overflowed the sampler
    (["--repetition-penalty", "inf"], "repetition penalty must be a finite number"),
    (["--repetition-penalty", "1e-320"], "repetition penalty must be at least"),
    (["-m", "a" * 5000], "model name is 5000 characters long"),
    (["-m", " "], "model name is empty"),  # was: silently the default model
])
def test_junk_values_are_refused_before_loading(args, message):
    r = run("generate", "hi", *args)
    assert r.exit_code == 1 and len(error_lines(r)) == 1 and message in r.stderr, r.stderr
