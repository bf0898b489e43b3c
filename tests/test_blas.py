"""The OpenBLAS probe: a build that dies on this CPU is detected in a child process, not
loaded, and the verdict is cached."""
import signal
import sys

import pytest

from mlxspec.system import blas as _blas

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux BLAS loader")


def test_probe_rejects_a_crashing_build_and_caches_the_verdict(tmp_path, monkeypatch):
    lib = tmp_path / "libopenblas.so.0"
    lib.write_bytes(b"stand-in")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(_blas, "_PROBE", f"import os; os.kill(os.getpid(), {int(signal.SIGILL)})")
    ok, why = _blas._probe_ok(str(lib))
    assert not ok and "crashes on this CPU" in why
    monkeypatch.setattr(_blas, "_PROBE", "raise SystemExit(0)")  # cached: not run again
    assert _blas._probe_ok(str(lib)) == (False, why)


def test_probe_accepts_a_working_build(tmp_path, monkeypatch):
    lib = tmp_path / "libopenblas.so.0"
    lib.write_bytes(b"stand-in")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(_blas, "_PROBE", "pass")
    assert _blas._probe_ok(str(lib)) == (True, "")


def test_the_installed_openblas_is_in_use():
    """Speculative decoding on Linux CPU depends on it; the pinned build runs on AVX2."""
    assert _blas.STATUS["blas"] == "openblas", _blas.STATUS["error"]


def test_importing_mlx_first_is_reported_not_silent():
    """mlx.core imported before mlxspec keeps the slow reference BLAS: say so."""
    import subprocess

    code = ("import warnings; warnings.simplefilter('always')\n"
            "import mlx.core\nimport mlxspec\nprint(mlxspec.system.blas.STATUS['error'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "imported before mlxspec" in out.stdout
    if _blas._find("cmeel.prefix/lib/libopenblas.so*"):
        assert "import mlxspec first" in out.stderr
