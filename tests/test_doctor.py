"""`mlxspec doctor`: backend, device, BLAS (with measured GFLOP/s) and versions, as text and --json."""
import json
from importlib.metadata import version

import mlx.core as mx
import pytest
from click.testing import CliRunner

import mlxspec
import mlxspec.cli.doctor_cmd as doctor_cmd
from mlxspec.cli.main import cli
from mlxspec.system.blas import STATUS


def doctor(*args):
    return CliRunner().invoke(cli, ["doctor", *args])


@pytest.fixture(scope="module")
def as_json():
    r = doctor("--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_json_reports_this_machine(as_json):
    """Every value is the real one (a doctor that printed constants would fail)."""
    d = as_json
    assert d["backend"] == ("metal" if mx.metal.is_available() else
                            "cuda" if getattr(mx, "cuda", None) and mx.cuda.is_available() else "cpu")
    assert d["device"] == str(mx.default_device())
    assert d["blas"] == STATUS["blas"] and d["blas_path"] == STATUS["path"] and d["blas_error"] == STATUS["error"]
    assert d["mlx"] == version("mlx") and d["mlx-lm"] == version("mlx-lm") and d["numpy"] == version("numpy")
    assert d["mlxspec"] == mlxspec.__version__
    assert d["f32_matmul"] == "full float32"  # importing mlxspec sets MLX_ENABLE_TF32=0
    assert isinstance(d["matmul_gflops_f32_1024"], float) and d["matmul_gflops_f32_1024"] > 0


def test_text_has_one_line_per_key(as_json, monkeypatch):
    monkeypatch.setattr(doctor_cmd, "measure_gflops", lambda *a, **k: as_json["matmul_gflops_f32_1024"])
    r = doctor()
    assert r.exit_code == 0, r.output
    shown = {}
    for line in r.stdout.splitlines():
        key, _, value = line.partition("  ")
        shown[key] = value.strip()
    for key in ("backend", "device", "blas", "mlx", "mlx-lm", "mlxspec", "python", "matmul_gflops_f32_1024"):
        assert shown[key] == str(as_json[key]), key
    assert set(shown) == {k for k, v in as_json.items() if v is not None}  # nulls left out of the text


def test_slow_blas_note_goes_to_stderr(monkeypatch):
    monkeypatch.setitem(STATUS, "blas", "default")
    monkeypatch.setitem(STATUS, "error", "cmeel-openblas not installed")
    monkeypatch.setattr(doctor_cmd, "measure_gflops", lambda *a, **k: 5.0)
    r = doctor()
    if mx.metal.is_available() or "linux" not in r.stdout.lower():
        pytest.skip("the note is for Linux CPU")
    assert "slow reference BLAS" in r.stderr and "slow reference BLAS" not in r.stdout
    assert "blas_error" in r.stdout and "cmeel-openblas not installed" in r.stdout
    assert json.loads(doctor("--json").stdout)["blas"] == "default"  # --json stdout stays pure JSON


def test_measure_gflops_counts_the_flops(monkeypatch):
    """2 n^3 flops per matmul: with a clock that advances 1 s per call, n=64, 3 reps."""
    ticks = iter([0.0, 1.0])
    monkeypatch.setattr(doctor_cmd.time, "perf_counter", lambda: next(ticks))
    assert doctor_cmd.measure_gflops(64, 3) == pytest.approx(2 * 64**3 * 3 / 1e9)
