"""Seeded fuzz of `mlxspec generate` on a tiny model folder: random bytes on stdin and in
argv, junk option values (wrong types, out of range, NaN, inf, huge, negative), junk -m.

Every run must end in a valid result (exit 0, text or JSON) or a non-zero exit with exactly
one `Error:` line on stderr (warnings aside) and no traceback, and change no file outside
its temp dir. In process through CliRunner (fast), plus a few real processes."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

import mlxspec.api
from mlxspec.cli.main import cli
from tiny_folder import make_model_dir

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parent.parent
SEED = 20250101
TRIALS = 1500

INTS = ["0", "-1", "65", "-0", "+3", "1e3", "1.5", "abc", "", " ", "0x10", "4294967296",
        "2147483648", "-2147483649", "9" * 25, "-" + "9" * 25, "nan", "inf", "\u0663", "1_000"]
FLOATS = ["-0.5", "2", "nan", "NaN", "-nan", "inf", "-inf", "1e309", "-1e309", "1e-320", "5e-324",
          "abc", "", "0x1p3", "1_0", "100.5", "1e2", "9" * 400, "0"]
OPTIONS = {  # option -> (valid values, junk values)
    "--max-tokens": (["1", "3", "8", "4000", "1000000"], INTS),
    "--temp": (["0", "0.7", "1.0", "1e-3", "5"], FLOATS),
    "--top-p": (["1", "0.9", "1e-9", "0.5"], FLOATS),
    "--top-k": (["0", "1", "5", "1000000"], INTS),
    "--seed": (["0", "1", "4294967295", "-0"], INTS),
    "--num-draft": (["0", "1", "4", "64"], INTS),
    "--repetition-penalty": (["1", "1.3", "0.5", "10"], FLOATS),
}


def junk_bytes(rng: random.Random, n: int) -> bytes:
    kind = rng.random()
    if kind < 0.3:
        return bytes(rng.randrange(256) for _ in range(n))
    if kind < 0.6:  # mostly vocabulary words with bytes sprinkled in
        words = [f"w{rng.randrange(70)}".encode() for _ in range(max(1, n // 4))]
        for _ in range(rng.randrange(4)):
            words.insert(rng.randrange(len(words) + 1), bytes([rng.randrange(128, 256)]))
        return b" ".join(words)
    return rng.choice([b"caf\xe9", b"\xff\xfe\x00", b"\xed\xa0\x80", b"\xc3", b"w1\x00w2",
                       "日本語 w3".encode(), b"\xef\xbb\xbfw4", b"\x1b[31mw5", b"w6\r\nw7", b"\t"])


def argv_text(rng: random.Random) -> str:
    # What Python hands a program for argv bytes (surrogateescape); no NUL in real argv.
    return os.fsdecode(junk_bytes(rng, rng.randrange(1, 40)).replace(b"\x00", b""))


def junk_model(rng: random.Random, folder: str) -> str:
    return rng.choice([
        *[folder] * 12, "", " ", "no-such-model", "../../..", "/", "/dev/null", "/etc/passwd",
        "a" * 5000, "org/repo", "x\x00y", "models", "-", "smollm2", folder + "/config.json",
        folder + "/../nope", "C:\\models\\x", "https://example.com/m", argv_text(rng), "a\nb",
    ])


def trial_args(rng: random.Random, folder: str) -> tuple[list[str], bytes | None]:
    args = ["generate", "-m", junk_model(rng, folder), "--no-chat-template"]
    if rng.random() < 0.3:
        args += ["--draft", rng.choice(["none", folder, "head", "auto", "", "nope"])]
    else:
        args += ["--draft", "none"]
    junk_odds = rng.choice([0.0, 0.05, 0.3])  # a third of the runs have no junk option
    for opt, (valid, junk) in OPTIONS.items():
        if rng.random() < 0.4:
            roll = rng.random()
            value = argv_text(rng) if roll < junk_odds / 4 else rng.choice(junk) if roll < junk_odds \
                else rng.choice(valid)
            args += [opt, value]
    if "--max-tokens" not in args:
        args += ["--max-tokens", str(rng.randrange(1, 12))]
    if rng.random() < 0.2:
        args += ["--stop", argv_text(rng)]
    if rng.random() < 0.3:
        args.append("--json")
    if rng.random() < 0.2:
        args.append("--stats")
    stdin = None
    if rng.random() < 0.5:
        stdin = junk_bytes(rng, rng.randrange(0, 200))
    else:
        args.append(argv_text(rng))
    return args, stdin


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]


def check(args, stdin, exit_code, stdout, stderr, exception=None) -> str | None:
    """None when the run is fine, else what is wrong with it."""
    if exception is not None and not isinstance(exception, SystemExit):
        return f"uncaught {type(exception).__name__}: {exception}"
    if "Traceback" in stdout + stderr:
        return "traceback"
    errors = error_lines(stderr)
    if exit_code == 0:
        if "--json" in args:
            try:
                doc = json.loads(stdout)
            except ValueError:
                return "exit 0 with no JSON document"
            if not isinstance(doc.get("tokens"), list):
                return "JSON without tokens"
        elif not stdout.endswith("\n"):
            return "exit 0 without a finished line of text"
        stray = [ln for ln in errors if not ln.startswith("[")]  # --stats is one [...] line
        return f"exit 0 with stderr {stray}" if stray else None
    if len(errors) != 1 or not errors[0].startswith("Error: "):
        return f"exit {exit_code} with {len(errors)} error lines: {errors}"
    return None


def tree_state(root: Path) -> dict:
    out = {}
    for p in root.rglob("*"):
        try:
            st = p.lstat()
        except OSError:
            continue
        out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(make_model_dir(tmp_path_factory.mktemp("fuzz") / "tiny"))


@pytest.fixture
def sandbox(tmp_path, monkeypatch, folder):
    """cwd, data dir and home in tmp; loads of the tiny folder cached (junk -m still goes
    through the real resolution every time)."""
    work = tmp_path / "cwd"
    for d in ("cwd", "data", "store", "hf"):
        (tmp_path / d).mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLXSPEC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLXSPEC_MODELS_DIR", str(tmp_path / "store"))  # not the shared models/
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    real, cache = mlxspec.api.load, {}

    def cached(model=None, draft="auto", **kw):
        if model == folder and draft in ("none", folder):
            if (model, draft) not in cache:
                cache[model, draft] = real(model, draft, **kw)
            return cache[model, draft]
        return real(model, draft, **kw)

    monkeypatch.setattr(mlxspec.api, "load", cached)
    return tmp_path


def test_fuzz_generate_in_process(folder, sandbox):
    rng = random.Random(SEED)
    registry = (REPO / "models" / "registry.toml").read_bytes()
    folder_before = tree_state(Path(folder))
    runner = CliRunner()
    failures, ok, refused = [], 0, 0
    for _ in range(TRIALS):
        args, stdin = trial_args(rng, folder)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # a real process prints them to stderr
            r = runner.invoke(cli, args, input=stdin)
        problem = check(args, stdin, r.exit_code, r.stdout, r.stderr, r.exception)
        if not problem and caught:
            problem = f"warning {caught[0].category.__name__}: {caught[0].message}"
        if problem:
            failures.append((problem, args, stdin))
        elif r.exit_code == 0:
            ok += 1
        else:
            refused += 1
    print(f"\nfuzz: {TRIALS} inputs, {ok} generated, {refused} refused in one line, "
          f"{len(failures)} failures")
    assert not failures, "\n".join(f"{p}: {a!r} stdin={s!r}" for p, a, s in failures[:10])
    assert ok > TRIALS // 10 and refused > TRIALS // 10  # both paths exercised
    assert (REPO / "models" / "registry.toml").read_bytes() == registry
    # The model folder stays as it was, but for the engine's measured-cost cache and the head
    # that --draft head adapts from the first run (both written atomically: mlxspec/costs.py,
    # mlxspec/adapt/state.py).
    heads = str(Path(folder) / "heads")

    def own(state):
        return {p: v for p, v in state.items() if not p.endswith(".mlxspec-costs.json") and not p.startswith(heads)}

    assert own(tree_state(Path(folder))) == own(folder_before)
    for d in ("cwd", "data", "store", "hf"):  # nothing written: not even a cache
        assert not any((sandbox / d).iterdir()), d


ENTRY = "from mlxspec.cli.main import main; main()"


@pytest.mark.parametrize("case", range(6))
def test_fuzz_generate_real_process(folder, tmp_path, case):
    """Real processes: what lands on the real stderr (no CliRunner in between)."""
    rng = random.Random(SEED + 1000 + case)
    args, stdin = trial_args(rng, folder)
    if case == 0:  # one certain refusal with undecodable argv and stdin
        args, stdin = ["generate", "-m", folder, "--seed", "-7", os.fsdecode(b"\xff\xfe")], b"\xe9"
    if case == 1:  # one certain success from binary stdin
        args, stdin = ["generate", "-m", folder, "--draft", "none", "--no-chat-template", "-n", "3"], \
            b"w1 \xff\xfe w2 \x00"
    env = dict(os.environ, HF_HUB_OFFLINE="1", MLXSPEC_DATA_DIR=str(tmp_path / "data"),
               MLXSPEC_MODELS_DIR=str(tmp_path / "store"), HF_HOME=str(tmp_path / "hf"))
    argv = [os.fsencode(a) for a in args if "\x00" not in a]  # bytes: the kernel's view
    if len(argv) != len(args):
        argv = [os.fsencode(a) for a in args[:2]] + [b"--draft", b"none", b"w1"]
    p = subprocess.run([sys.executable.encode(), b"-c", ENTRY.encode(), *argv], input=stdin or b"",
                       capture_output=True, env=env, cwd=tmp_path, timeout=120)
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    problem = check(args, stdin, p.returncode, out, err)
    assert problem is None, f"{problem}: {args!r} stdin={stdin!r}\n{err}"
    if case == 0:
        assert p.returncode != 0 and "seed must be" in err
    if case == 1:
        assert p.returncode == 0 and err.count("not valid UTF-8") == 1
    assert not any(tmp_path.iterdir())  # nothing written, not even an empty folder
