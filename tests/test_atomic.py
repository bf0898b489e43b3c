"""The one atomic writer (mlxspec/atomic.py) and every writer that uses it: an exception
mid-write or a kill -9 between write and rename leaves the previous file loadable, and
no temp file behind (or one that readers skip and clean_stale_temps removes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mlxspec import atomic
from mlxspec.atomic import (atomic_dir, atomic_write_text, clean_stale_temps, discard_dir, is_temp,
                            replace_dir)

REPO = Path(__file__).resolve().parent.parent


def dead_pid() -> int:
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(p.stdout)


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not is_temp(p))


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if is_temp(p))


# -- the helper itself ---------------------------------------------------------------------
def test_failed_write_keeps_the_old_file_and_removes_its_temp(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_text(p, "old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["a.json"]


def test_atomic_dir_swaps_in_one_step_and_a_failure_keeps_the_old_folder(tmp_path):
    d = tmp_path / "shard"
    with atomic_dir(d) as t:
        (t / "x").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(d) as t:
            (t / "x").write_text("half")
            raise RuntimeError("boom")
    assert (d / "x").read_text() == "1" and os.listdir(tmp_path) == ["shard"]
    with atomic_dir(d) as t:
        (t / "x").write_text("2")
    assert (d / "x").read_text() == "2" and os.listdir(tmp_path) == ["shard"]


def test_replace_dir_without_a_system_swap_still_replaces(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "f").write_text("old")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "f").write_text("new")
    replace_dir(tmp_path / "new", tmp_path / "old")
    assert (tmp_path / "old" / "f").read_text() == "new" and os.listdir(tmp_path) == ["old"]


def test_clean_stale_temps_removes_dead_writers_files_and_folders_only(tmp_path):
    dead = dead_pid()
    (tmp_path / f".a.json.tmp-{dead}-x1").write_text("half")
    (tmp_path / f".shard-0000.tmp-{dead}-x2").mkdir()
    (tmp_path / f".shard-0000.tmp-{dead}-x2" / "tokens.npy").write_bytes(b"x" * 100)
    (tmp_path / f".reply-store.tmp{dead}.safetensors").write_bytes(b"x" * 10)  # older writer's name
    live = tmp_path / f".b.json.tmp-{os.getppid()}-x3"
    live.write_text("being written")
    (tmp_path / "keep.json").write_text("{}")
    (tmp_path / ".hidden-user-file").write_text("mine")
    freed = clean_stale_temps(tmp_path)
    assert freed == 4 + 100 + 10
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, "keep.json", ".hidden-user-file"])


def test_discard_dir_leaves_nothing_under_the_real_name(tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "f").write_text("x")
    discard_dir(d)
    assert os.listdir(tmp_path) == []


# -- every writer, with an exception mid-write -------------------------------------------
def _boom(*a, **k):
    raise OSError(28, "No space left on device")


def _head(tmp_path):
    from mlxspec.head.io import save_head
    from mlxspec.head.model import new_head
    from mlxspec.runtime.layered import LayeredModel
    from tiny import tiny_model

    model = tiny_model(64, layers=4, hidden=32, seed=1)
    fp = LayeredModel(model).fingerprint()
    path = tmp_path / "heads" / "h.safetensors"

    def save(steps):
        save_head(path, new_head(model, 2), np.arange(24), fp, {"vocab": 24, "steps": steps})
    return path, save


def test_head_files_survive_a_failed_write(tmp_path, monkeypatch):
    from mlxspec.drafters.head import find_heads
    from mlxspec.head.io import read_head

    path, save = _head(tmp_path)
    save(1)
    monkeypatch.setattr(os, "replace", _boom)
    with pytest.raises(OSError):
        save(2)
    monkeypatch.undo()
    assert read_head(path).settings["steps"] == 1
    assert find_heads(tmp_path) == [path]
    assert temps(path.parent) == []  # the old writer left `.h.json.tmpPID` behind


def test_head_text_writer_removes_its_temp_when_the_rename_fails(tmp_path, monkeypatch):
    from mlxspec.head.io import atomic_write_text as head_write_text

    p = tmp_path / "h.json"
    head_write_text(p, "old")
    monkeypatch.setattr(os, "replace", _boom)
    with pytest.raises(OSError):
        head_write_text(p, "new")
    monkeypatch.undo()
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["h.json"]


def test_reply_store_survives_a_failed_write(tmp_path, monkeypatch):
    from mlxspec.drafters.reply_store import SEP, load_store, save_store

    p = tmp_path / "reply-store.safetensors"
    save_store(p, np.array([1, 2, 3, SEP]), 64, "one")
    monkeypatch.setattr(os, "replace", _boom)
    with pytest.raises(OSError):
        save_store(p, np.array([4, 5, 6, 7, SEP]), 64, "two")
    monkeypatch.undo()
    assert load_store(p, 64).tokens.tolist() == [1, 2, 3, SEP]
    assert os.listdir(tmp_path) == [p.name]


def test_a_shard_survives_a_failed_replacement(tmp_path, monkeypatch):
    """The old writer removed the previous shard before renaming the new one in: a failure
    (or a kill) there lost it."""
    from mlxspec.training import selfgen

    path = tmp_path / "gen" / "shard-0000"
    selfgen.write_shard(path, {"tokens": np.array([[1, 2, -1]], np.int32)}, {"n": 1})
    for obj, name in ((os, "rename"), (os, "replace"), (Path, "rename"), (atomic, "_exchange")):
        monkeypatch.setattr(obj, name, _boom, raising=False)
    with pytest.raises(OSError):
        selfgen.write_shard(path, {"tokens": np.array([[3, 4, 5]], np.int32)}, {"n": 2})
    monkeypatch.undo()
    assert np.load(path / "tokens.npy").tolist() == [[1, 2, -1]]
    assert json.loads((path / "meta.json").read_text()) == {"n": 1}
    assert os.listdir(path.parent) == ["shard-0000"]


def test_a_failed_shard_write_leaves_no_temp_folder(tmp_path, monkeypatch):
    from mlxspec.training import selfgen

    calls = []

    def np_save_fails_second(p, arr, *a, **k):
        calls.append(p)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(p, arr, *a, **k)

    real = np.save
    monkeypatch.setattr(selfgen.np, "save", np_save_fails_second)
    with pytest.raises(OSError):
        selfgen.write_shard(tmp_path / "shard-0000", {"tokens": np.zeros((1, 2)), "hk": np.zeros((1, 2))}, {})
    assert os.listdir(tmp_path) == []  # the old writer left `.shard-0000.tmp`


def test_bench_writer_survives_a_failed_write(tmp_path, monkeypatch):
    from mlxspec.cli.bench_cmd import _atomic_write

    p = tmp_path / "bench.json"
    _atomic_write(str(p), '{"old": 1}')
    monkeypatch.setattr(os, "replace", _boom)
    with pytest.raises(OSError):
        _atomic_write(str(p), '{"new": 2}')
    monkeypatch.undo()
    assert json.loads(p.read_text()) == {"old": 1} and os.listdir(tmp_path) == ["bench.json"]


# -- every writer, killed (-9) between its write and its rename -----------------------------
KILL_AT_RENAME = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import mlxspec
from mlxspec import atomic

def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)

def arm():
    os.replace = os.rename = atomic._exchange = die
    Path.rename = die
"""


def run_killed(body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    code = KILL_AT_RENAME.format(tests=str(REPO / "tests")) + textwrap.dedent(body)
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == -9, p.stderr[-2000:]
    return p


def test_kill_between_write_and_rename_head_file(tmp_path):
    from mlxspec.drafters.head import find_heads
    from mlxspec.head.io import read_head

    run_killed("""
        from test_atomic import _head
        path, save = _head(Path("."))
        save(1)
        arm()
        save(2)
    """, tmp_path)
    heads = tmp_path / "heads"
    assert read_head(heads / "h.safetensors").settings["steps"] == 1
    assert find_heads(tmp_path) == [heads / "h.safetensors"]
    assert len(temps(heads)) == 1  # the killed write's temp: skipped by readers...
    assert clean_stale_temps(heads) > 0 and temps(heads) == []  # ...and cleaned up


def test_kill_between_write_and_rename_reply_store(tmp_path):
    from mlxspec.drafters.reply_store import SEP, find_store, load_store
    from mlxspec.hub.store import check_model_dir
    from tiny_folder import make_model_dir

    make_model_dir(tmp_path / "m")
    run_killed("""
        import numpy as np
        from mlxspec.drafters.reply_store import save_store
        save_store(Path("m/reply-store.safetensors"), np.array([1, 2, 3, -1]), 64, "one")
        arm()
        save_store(Path("m/reply-store.safetensors"), np.array([4, 5, 6, -1]), 64, "two")
    """, tmp_path)
    m = tmp_path / "m"
    assert load_store(find_store(m), 64).tokens.tolist() == [1, 2, 3, SEP]
    assert len(temps(m)) == 1
    check_model_dir(m)  # the model loads, and the temp is cleaned
    assert temps(m) == []


def test_kill_between_write_and_rename_shard(tmp_path):
    from mlxspec.training.selfgen import _shard_paths

    run_killed("""
        import numpy as np
        from mlxspec.training.selfgen import write_shard
        write_shard(Path("gen/shard-0000"), {"tokens": np.array([[1, 2]], np.int32)}, {"n": 1})
        arm()
        write_shard(Path("gen/shard-0000"), {"tokens": np.array([[3, 4]], np.int32)}, {"n": 2})
    """, tmp_path)
    gen = tmp_path / "gen"
    assert _shard_paths(gen) == [gen / "shard-0000"]
    assert np.load(gen / "shard-0000" / "tokens.npy").tolist() == [[1, 2]]
    assert clean_stale_temps(gen) > 0 and os.listdir(gen) == ["shard-0000"]


def test_kill_between_write_and_rename_bench_output(tmp_path):
    run_killed("""
        from mlxspec.cli.bench_cmd import _atomic_write
        _atomic_write("bench.json", '{"old": 1}')
        arm()
        _atomic_write("bench.json", '{"new": 2}')
    """, tmp_path)
    assert json.loads((tmp_path / "bench.json").read_text()) == {"old": 1}
    assert visible(tmp_path) == ["bench.json"]
    assert clean_stale_temps(tmp_path) > 0 and os.listdir(tmp_path) == ["bench.json"]


def test_kill_during_a_checkpoint_write_resumes_from_the_previous_one(tmp_path):
    """train-head killed while writing a checkpoint (at each of its renames in turn): the
    next run resumes from the previous checkpoint and finishes."""
    from mlxspec.head.io import read_head
    from mlxspec.training.train import TrainSettings, train
    from tiny import CharTokenizer, tiny_model

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(chr(33 + (i * 7) % 60) for i in range(4000)))
    child = f"""
        from mlxspec.training.train import TrainSettings, train
        from tiny import CharTokenizer, tiny_model
        n = int(sys.argv[1])
        real = os.replace
        count = [0]
        def counting(a, b):
            count[0] += 1
            if count[0] == n:
                die()
            real(a, b)
        os.replace = counting
        s = TrainSettings(exit_layer=2, vocab=20, steps=4, batch=2, seq_len=16, lr=1e-3, warmup=1,
                          corpus=[{str(corpus)!r}], eval_windows=4, corpus_tokens=600)
        train(tiny_model(64, layers=4, hidden=32, seed=10), CharTokenizer(64, eos=63), Path("m"), s,
              progress=False, ckpt_every=1)
    """
    code = KILL_AT_RENAME.format(tests=str(REPO / "tests")) + textwrap.dedent(child)
    settings = TrainSettings(exit_layer=2, vocab=20, steps=4, batch=2, seq_len=16, lr=1e-3, warmup=1,
                             corpus=[str(corpus)], eval_windows=4, corpus_tokens=600)
    model, tok = tiny_model(64, layers=4, hidden=32, seed=10), CharTokenizer(64, eos=63)
    ref = read_head(train(model, tok, tmp_path / "ref", settings, progress=False).path).weights
    # renames: 1 tokens.npy, then per step head, optimizer, state.json (2-4, 5-7, 8-10; 600
    # corpus tokens keep the teacher phase short enough to write no checkpoint of its own)
    for n in (3, 6, 8):
        work = tmp_path / f"run{n}"
        work.mkdir()
        p = subprocess.run([sys.executable, "-c", code, str(n)], cwd=work, capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == -9, p.stderr[-2000:]
        ckpt = work / "m" / "heads" / ".ckpt-default"
        state = json.loads((ckpt / "state.json").read_text()) if (ckpt / "state.json").exists() else None
        if state is not None:  # the checkpoint it names is whole
            assert (ckpt / state.get("head_file", "head.safetensors")).is_file()
            assert (ckpt / state.get("opt_file", "opt.safetensors")).is_file()
        res = train(model, tok, work / "m", settings, progress=False)
        assert res is not None and res.steps == 4 and res.path.is_file()
        assert sorted(os.listdir(work / "m" / "heads")) == ["default.json", "default.safetensors"]
        # resumed from a consistent checkpoint: the same head as an uninterrupted run (the
        # old writer could resume a step-2 head with step-1 optimizer state)
        got = read_head(res.path).weights
        assert all(np.allclose(np.array(got[k]), np.array(ref[k]), atol=1e-5) for k in ref)
