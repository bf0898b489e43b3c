"""Fault injection: kill -9 at seeded random moments while mlxspec writes what the user
must not lose (a model pull, a head file, the reply store, a saved conversation). After
every kill the previous state loads, nothing half-written is visible to `models list`,
`chat --list` or head loading, and the next run succeeds.

Each scenario runs TRIALS child processes that write in a loop and are killed after a
random delay; the counts are printed (pytest -s) and checked."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hub_fakes import CHILD_FAKE_DOWNLOAD
from mlxspec.atomic import is_temp

TRIALS = 20
TESTS = Path(__file__).resolve().parent
PRELUDE = f"import sys; sys.path.insert(0, {str(TESTS)!r})\nimport mlxspec\n"


def kill_trials(label: str, child: str, check, env=None, cwd=None, seed=0, trials=TRIALS,
                max_delay=0.5, watch=()) -> dict:
    """Run `child` (prints "ready" once set up, then writes in a loop) `trials` times,
    SIGKILL it after a seeded random delay, then call `check(trial)`. Counts: trials,
    kills, kills that left a temp file behind (they landed mid-write)."""
    rng = random.Random(seed)
    counts = {"trials": 0, "kills": 0, "mid_write": 0}
    code = PRELUDE + textwrap.dedent(child)
    for trial in range(trials):
        p = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=cwd, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        try:
            line = p.stdout.readline()
            assert line.strip() == b"ready", f"{label}: child failed to start ({line!r})"
            time.sleep(rng.uniform(0, max_delay))
        finally:
            p.kill()
            p.wait()
            p.stdout.close()
        counts["trials"] += 1
        counts["kills"] += p.returncode == -9
        if any(is_temp(f) or f.name.startswith(".pull-") for d in watch if Path(d).is_dir()
               for f in Path(d).iterdir()):
            counts["mid_write"] += 1
        check(trial)
    print(f"\n{label}: {counts['trials']} trials, {counts['kills']} kills, "
          f"{counts['mid_write']} landed mid-write, 0 failures")
    assert counts["kills"] == trials
    return counts


# -- models pull (conversion of a tiny GGUF) ----------------------------------------------
PULL_LOOP = CHILD_FAKE_DOWNLOAD + """
import mlxspec.hub.gguf, gguf, transformers  # warm imports before "ready"
from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer

print("ready", flush=True)
while True:
    P.pull("tiny-llama", force=True)
"""


def test_kill_during_models_pull(tmp_path, monkeypatch):
    import mlx.core as mx

    from hub_fakes import NAME, fake_source, patch_download
    from mlxspec.cli.main import cli
    from mlxspec.hub.pull import pull
    from mlxspec.hub.store import check_model_dir

    env = fake_source(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    patch_download(monkeypatch, env["FAKE_WHEELS"])
    store = Path(env["MLXSPEC_MODELS_DIR"])
    dest = pull(NAME)
    (dest / "heads").mkdir()
    (dest / "heads" / "mine.safetensors").write_bytes(b"trained head")
    (dest / "reply-store.safetensors").write_bytes(b"learnt store")

    def check(trial):
        r = CliRunner().invoke(cli, ["models", "list"])  # also removes the killed pull's folder
        assert r.exit_code == 0, r.output
        installed = [line.split()[0] for line in r.stdout.splitlines()[1:] if line.startswith("  ") and
                     not line.startswith("      ")]
        assert installed == [NAME], (trial, r.stdout)
        assert "mine" in r.stdout
        assert os.listdir(store) == [NAME], (trial, os.listdir(store))
        check_model_dir(dest)
        assert mx.load(str(dest / "model-00001.safetensors"))  # the weights read back whole
        assert (dest / "heads" / "mine.safetensors").read_bytes() == b"trained head"
        assert (dest / "reply-store.safetensors").read_bytes() == b"learnt store"

    kill_trials("models pull", PULL_LOOP, check, env=dict(os.environ), seed=1, max_delay=1.5,
                watch=[store])
    pull(NAME, force=True)  # the next run succeeds, and the model generates
    import mlxspec

    engine = mlxspec.load(NAME, draft="none")
    assert isinstance(mlxspec.generate(engine, "the", max_tokens=4), str)


# -- a head file ---------------------------------------------------------------------------
HEAD_LOOP = """
import numpy as np, mlx.core as mx
from pathlib import Path
from mlx.utils import tree_flatten
from test_faults import weights_digest
from mlxspec.head.io import save_head
from mlxspec.head.model import new_head
from mlxspec.runtime.layered import LayeredModel
from tiny import tiny_model

model = tiny_model(64, layers=4, hidden=32, seed=1)
fp = LayeredModel(model).fingerprint()
print("ready", flush=True)
i = 0
while True:
    i += 1
    mx.random.seed(i)
    head = new_head(model, 2)
    digest = weights_digest(dict(tree_flatten(head.parameters())))
    save_head(Path("m/heads/default.safetensors"), head, np.arange(24), fp, {"vocab": 24, "step": i, "digest": digest})
"""


def weights_digest(weights: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(weights):
        h.update(k.encode())
        h.update(np.array(weights[k]).astype(np.float32).tobytes())
    return h.hexdigest()


def test_kill_during_a_head_write(tmp_path):
    from mlxspec.drafters.head import find_heads
    from mlxspec.head.io import read_head
    from tiny_folder import make_model_dir

    model_dir = make_model_dir(tmp_path / "m")
    heads = model_dir / "heads"
    steps = []

    def check(trial):
        found = find_heads(model_dir)
        if not found:  # killed before the very first head was written
            assert trial == 0 or not steps, "a head that was there is gone"
            return
        assert found == [heads / "default.safetensors"]
        hf = read_head(found[0])
        assert hf.settings["digest"] == weights_digest(hf.weights)  # weights and settings of one write
        json.loads((heads / "default.json").read_text())
        steps.append(hf.settings["step"])

    kill_trials("head file", HEAD_LOOP, check, cwd=tmp_path, seed=2, max_delay=0.6, watch=[heads])
    assert steps, "no trial got past the first write"


# -- the reply store -----------------------------------------------------------------------
STORE_LOOP = """
import numpy as np
from pathlib import Path
from mlxspec.drafters.reply_store import save_store
print("ready", flush=True)
i = 0
while True:
    i += 1
    n = 20000 + 997 * (i % 50)
    save_store(Path("m/reply-store.safetensors"), np.arange(n) % 60, 64, str(n))
"""


def test_kill_during_a_reply_store_write(tmp_path):
    from mlxspec.drafters.reply_store import find_store, load_store
    from mlxspec.hub.store import check_model_dir
    from tiny_folder import make_model_dir

    model_dir = make_model_dir(tmp_path / "m")
    seen = []

    def check(trial):
        check_model_dir(model_dir)  # the model loads whatever state the store is in
        path = find_store(model_dir)
        if path is None:
            assert not seen, "a store that was there is gone"
            return
        import mlx.core as mx

        st = load_store(path, 64)
        n = int(mx.load(str(path), return_metadata=True)[1]["source"])
        assert st.tokens.tolist() == (np.arange(n) % 60).tolist()
        assert not [f for f in os.listdir(model_dir) if is_temp(f)]  # cleaned by the check
        seen.append(n)

    kill_trials("reply store", STORE_LOOP, check, cwd=tmp_path, seed=3, max_delay=0.4, watch=[model_dir])
    assert seen


# -- a saved conversation ------------------------------------------------------------------
def test_kill_during_a_conversation_save(tmp_path):
    from mlxspec.cli.main import cli
    from mlxspec.tui.store import ConversationStore
    from test_tui_store import KILLER  # the saving loop: a first message, then one more per save

    env = dict(os.environ, MLXSPEC_DATA_DIR=str(tmp_path))
    store = ConversationStore(tmp_path / "conversations")
    lengths = []

    def check(trial):
        convs = store.list()
        assert [c.id for c in convs] == ["victim"] and not convs[0].unreadable
        conv = store.load("victim")
        assert conv.messages[0].content == "x" * 200000
        assert all(m.content == str(i) * 50000 for i, m in enumerate(conv.messages[1:], 1))
        lengths.append(len(conv.messages))
        r = CliRunner(env={"MLXSPEC_DATA_DIR": str(tmp_path)}).invoke(cli, ["chat", "--list"])
        assert r.exit_code == 0 and "unreadable" not in r.output and r.output.count("victim") == 1

    kill_trials("conversation save", KILLER, check, env=env, seed=4, max_delay=0.3,
                watch=[tmp_path / "conversations"])
    assert max(lengths) > 1


@pytest.mark.parametrize("seed", [0])
def test_kill_trials_control_detects_a_torn_write(tmp_path, seed):
    """Control: the harness catches a writer that is not atomic (a plain write_text)."""
    child = """
    import json
    from pathlib import Path
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        Path("f.json").write_text(json.dumps({"i": i, "pad": "x" * 2_000_000}))
    """

    def check(trial):
        if (tmp_path / "f.json").exists():
            json.loads((tmp_path / "f.json").read_text())

    with pytest.raises(ValueError):
        kill_trials("control", child, check, cwd=tmp_path, seed=seed, max_delay=0.3)
