"""A target split over 2 and 3 ranks of MLX's distributed group (ring backend, loopback):
speculative output (lookup, a draft model with lookup branches: trees) equals the single
process's, greedy and sampled with the same seeds (the same token ids: the sharded engine
computes the same logits, so it samples exactly as the single process does, whose
distribution tests/test_sampling.py checks); a rank that dies or hangs ends rank 0 with
one line. Ranks are started as mlx.launch starts them (MLX_RANK, MLX_HOSTFILE), so each
one's exit code and output can be read; one test goes through mlx.launch itself."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dist_driver import run_jobs
from tiny_folder import make_model_dir

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PROMPT = "w3 w4 w5 w6 w7 w3 w4 w5 w6"
IDS = [5, 6, 7, 8, 9, 5, 6, 7, 8]  # PROMPT's ids in tiny_folder's vocabulary
JOBS = [
    {"draft": "none", "prompt": IDS, "n": 12},
    {"draft": "lookup", "prompt": IDS, "n": 24, "turns": 2},
    {"draft": "model", "prompt": IDS, "n": 24},
    {"draft": "lookup", "prompt": IDS, "n": 24, "adaptive": True},  # governor, cost probe
    {"draft": "lookup", "prompt": IDS, "n": 24, "temp": 0.9, "seed": 3},
    {"draft": "model", "prompt": IDS, "n": 24, "temp": 0.8, "top_p": 0.9, "seed": 5, "turns": 2},
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    out = {a: make_model_dir(root / a, layers=5, model_type=a) for a in ("llama", "qwen2", "qwen3")}
    out["draft"] = make_model_dir(root / "draft", seed=1)
    return out


def _hostfile(tmp: Path, n: int) -> Path:
    ports = []
    for _ in range(n):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    path = tmp / f"hosts-{ports[0]}.json"
    path.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in ports]))
    return path


def launch(tmp: Path, n: int, argv: list, timeout: float = 120, env: dict = {}, grace: float = 60):
    """n ranks of argv; [(returncode, stdout, stderr)] by rank. The others get `grace`
    seconds after rank 0 ends before they are killed."""
    hosts = _hostfile(tmp, n)
    procs = []
    for r in range(n):
        e = dict(os.environ, MLX_RANK=str(r), MLX_HOSTFILE=str(hosts), **env)
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e))
    out, deadline = [], time.monotonic() + timeout
    try:
        for i, p in enumerate(procs):
            left = deadline - time.monotonic() if i == 0 else grace
            try:
                o, e = p.communicate(timeout=max(1.0, left))
            except subprocess.TimeoutExpired:
                if i == 0:
                    raise
                p.kill()  # a rank the test made hang
                o, e = p.communicate()
            out.append((p.returncode, o, e))
    finally:
        for p in procs:
            p.kill()
    return out


def driver(folders, arch, jobs=JOBS):
    return [sys.executable, str(HERE / "dist_driver.py"), str(folders[arch]), str(folders["draft"]), json.dumps(jobs)]


@pytest.mark.parametrize("arch,ranks", [("llama", 2), ("qwen2", 3), ("qwen3", 2)])
def test_sharded_engine_equals_one_process(folders, tmp_path, arch, ranks):
    want = run_jobs(str(folders[arch]), str(folders["draft"]), JOBS)
    res = launch(tmp_path, ranks, driver(folders, arch))
    assert [rc for rc, _, _ in res] == [0] * ranks, [e[-2000:] for _, _, e in res]
    assert json.loads(res[0][1]) == want
    assert all(o == "" for _, o, _ in res[1:])  # only rank 0 prints


def test_a_missed_rewind_on_a_worker_is_caught(folders, tmp_path):
    """Control: a worker that does not trim its cache after rejected drafts changes the
    output, so the equality above would see a rank whose cache went out of step."""
    jobs = JOBS[1:2]
    want = run_jobs(str(folders["llama"]), str(folders["draft"]), jobs)
    res = launch(tmp_path, 2, driver(folders, "llama", jobs) + ["--fault", "no-trim"])
    assert res[0][0] == 0 and json.loads(res[0][1]) != want


@pytest.mark.parametrize("fault", ["die:6", "hang:6"])
def test_a_lost_rank_ends_rank_0_with_one_line(folders, tmp_path, fault):
    t0 = time.monotonic()
    res = launch(tmp_path, 2, driver(folders, "llama", JOBS[1:2]) + ["--fault", fault], timeout=90,
                 env={"MLXSPEC_DIST_TIMEOUT": "8"}, grace=5)
    rc, out, err = res[0]
    lines = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    assert rc != 0 and out == "", err[-2000:]
    assert len(lines) == 1 and "rank" in lines[0], err[-2000:]
    assert "Traceback" not in err
    assert time.monotonic() - t0 < 80


def test_generate_under_mlx_launch(folders, tmp_path):
    """The command a user runs: only rank 0 prints, the text equals one process's."""
    args = ["generate", "-m", str(folders["llama"]), "--draft", "lookup", "--no-chat-template",
            "-n", "20", "--json", PROMPT]
    one = subprocess.run([str(BIN / "mlxspec")] + args, capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr
    r = subprocess.run([str(BIN / "mlx.launch"), "-n", "2", "--backend", "ring", "--",
                        str(BIN / "mlxspec")] + args, capture_output=True, text=True, timeout=180)
    docs = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert len(docs) == 1, (r.stdout, r.stderr[-2000:])
    assert docs[0]["text"] == json.loads(one.stdout)["text"]
    assert docs[0]["stats"]["distributed"]["ranks"] == 2


SMOL = HERE.parent / "models" / "smollm2-135m-instruct"


@pytest.mark.real
@pytest.mark.slow  # 80 s on 2 cores; the tiny-model cases above run by default (make test-all runs this)
@pytest.mark.skipif(not (SMOL / "config.json").exists(), reason="smollm2-135m-instruct not pulled")
def test_real_smollm2_over_two_ranks_equals_one_process(tmp_path):
    """Greedy (seeded sampling is compared on the tiny models with a fixed draft length:
    here the governor's timing-driven depths would draw differently)."""
    args = ["generate", "-m", str(SMOL), "--draft", "lookup", "-n", "40", "--json", "Repeat after me: the quick brown fox jumps over the lazy dog. The quick brown fox"]
    one = subprocess.run([str(BIN / "mlxspec")] + args, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    res = launch(tmp_path, 2, [str(BIN / "mlxspec")] + args, timeout=300)
    assert res[0][0] == 0, res[0][2][-2000:]
    got, want = json.loads(res[0][1]), json.loads(one.stdout)
    assert got["text"] == want["text"] and got["tokens"] == want["tokens"]
    assert got["stats"]["accepted"] > 0  # speculation ran through the pipeline


def test_ranks_on_one_machine_share_its_blas_threads(tmp_path, monkeypatch):
    from mlxspec.system import blas

    hosts = tmp_path / "hosts.json"
    monkeypatch.setenv("MLX_HOSTFILE", str(hosts))
    monkeypatch.setenv("MLX_RANK", "1")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    hosts.write_text(json.dumps([["10.0.0.1:5000"], ["10.0.0.2:5000"]]))  # one rank a machine
    assert blas.local_ranks() == 1
    blas.share_cores()
    assert "OPENBLAS_NUM_THREADS" not in os.environ
    hosts.write_text(json.dumps([["127.0.0.1:5000"], ["127.0.0.1:5001"], ["10.0.0.2:5000"], ["127.0.0.1:5002"]]))
    assert blas.local_ranks() == 3
    blas.share_cores()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "2"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "5")  # the user's choice wins
    blas.share_cores()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "5"
    hosts.write_text("not json")
    assert blas.local_ranks() == 1
