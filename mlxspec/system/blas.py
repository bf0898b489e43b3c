"""Load a fast BLAS before MLX on Linux.

MLX's Linux CPU wheel links the reference BLAS (~5 GFLOP/s), under which a forward of
8 tokens costs 8x one token and speculative decoding cannot win. OpenBLAS from the
`cmeel-openblas` wheel, loaded with RTLD_GLOBAL before `mlx.core`, takes over the BLAS
symbols (~190 GFLOP/s). That OpenBLAS needs `libgfortran.so.5`, which a bare machine
lacks; the mlx-cpu wheel bundles a libgfortran under a mangled SONAME, so we load a copy
whose SONAME is patched to the one OpenBLAS asks for.

cmeel-openblas wheels are built for one CPU each (0.3.31 for SKYLAKEX with AVX-512,
0.3.29 for ZEN with AVX2), not DYNAMIC_ARCH, so on a CPU without those instructions the
first matmul dies with SIGILL. Before loading it into this process we run one small matmul
through it in a child process and remember the verdict per library and CPU.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

STATUS: dict = {"blas": "default", "path": None, "error": None}
_PROBE_ENV = "MLXSPEC_BLAS_PROBE"  # set in the probing child: load without probing
_PROBE = """
import numpy as np
import mlxspec
import mlx.core as mx
assert mlxspec.system.blas.STATUS["blas"] == "openblas", mlxspec.system.blas.STATUS["error"]
a = np.random.default_rng(0).standard_normal((96, 80)).astype(np.float32)
got = np.array(mx.array(a) @ mx.array(a.T))
assert np.allclose(got, a @ a.T, rtol=1e-4, atol=1e-3), "wrong matmul results"
"""


def _site_dirs() -> list[Path]:
    dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    dirs.update(p for p in sys.path if p.endswith("site-packages"))
    return [Path(d) for d in dirs if d and Path(d).is_dir()]


def _find(pattern: str) -> str | None:
    for d in _site_dirs():
        hits = sorted(glob.glob(str(d / pattern)))
        if hits:
            return hits[0]
    return None


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlxspec" / "blas"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _gfortran_shim() -> None:
    """Load a libgfortran whose SONAME is `libgfortran.so.5` (see module doc)."""
    if ctypes.util.find_library("gfortran"):
        return
    bundled = _find("mlx_cpu.libs/libgfortran-*.so*") or _find("numpy.libs/libgfortran-*.so*")
    if bundled is None:
        raise OSError("no libgfortran.so.5 on this machine and none bundled in a wheel")
    libdir = Path(bundled).parent
    for dep in sorted(libdir.glob("libquadmath-*.so*")):
        ctypes.CDLL(str(dep), mode=ctypes.RTLD_GLOBAL)
    data = Path(bundled).read_bytes()
    old = Path(bundled).name.encode() + b"\0"
    if data.count(old) != 1:
        raise OSError(f"unexpected SONAME layout in {bundled}")
    patched = data.replace(old, b"libgfortran.so.5".ljust(len(old), b"\0"))
    target = _cache_dir() / f"libgfortran.so.5.{len(data)}"
    if not target.exists() or target.stat().st_size != len(patched):
        _write_atomic(target, patched)
    ctypes.CDLL(str(target), mode=ctypes.RTLD_GLOBAL)


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""


def _probe_ok(path: str) -> tuple[bool, str]:
    """Does this OpenBLAS run (and compute right) on this CPU? Checked in a child
    process, since a wrong build kills its process; the verdict is cached."""
    st = os.stat(path)
    key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}|{_cpu_flags()}".encode()).hexdigest()[:16]
    verdict_file = _cache_dir() / f"probe-{key}.json"
    try:
        v = json.loads(verdict_file.read_text())
        return bool(v["ok"]), str(v["why"])
    except (OSError, ValueError, KeyError):
        pass
    env = dict(os.environ, **{_PROBE_ENV: "1"})
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
        ok = r.returncode == 0
        if ok:
            why = ""
        elif r.returncode < 0:
            why = f"OpenBLAS build in {path} crashes on this CPU (signal {-r.returncode})"
        else:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            why = f"OpenBLAS probe failed: {last}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"OpenBLAS probe failed: {exc}"  # not cached: may be transient
    try:
        _write_atomic(verdict_file, json.dumps({"ok": ok, "why": why}).encode())
    except OSError:
        pass
    return ok, why


def local_ranks() -> int:
    """Processes of this mlx.launch (ring hostfile) on this machine: the entries with our
    own rank's address. 1 when not launched or not known."""
    try:
        hosts = json.loads(Path(os.environ["MLX_HOSTFILE"]).read_text())
        ours = hosts[int(os.environ["MLX_RANK"])][0].rsplit(":", 1)[0]
        return max(1, sum(1 for h in hosts if h and h[0].rsplit(":", 1)[0] == ours))
    except (KeyError, ValueError, OSError, IndexError, TypeError, AttributeError):
        return 1


def share_cores() -> None:
    """Ranks on one machine share its cores: each gets its share of BLAS threads, since an
    oversubscribed OpenBLAS spins (measured ~15x slower here). A user's setting wins."""
    n = local_ranks()
    if n > 1 and "OPENBLAS_NUM_THREADS" not in os.environ:
        os.environ["OPENBLAS_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))


def load_openblas() -> dict:
    """Best effort: on any failure MLX keeps its own BLAS and `mlxspec doctor` says why."""
    if not sys.platform.startswith("linux"):
        return STATUS
    share_cores()
    if "mlx.core" in sys.modules:
        # Too late: MLX already bound the reference BLAS, ~8x slower on batched forwards.
        STATUS["error"] = "mlx.core was imported before mlxspec (import mlxspec first)"
        if _find("cmeel.prefix/lib/libopenblas.so*") and not os.environ.get("MLXSPEC_NO_OPENBLAS"):
            warnings.warn("mlxspec: mlx.core was imported before mlxspec, so MLX keeps its slow "
                          "reference BLAS; import mlxspec first", RuntimeWarning, stacklevel=3)
        return STATUS
    if os.environ.get("MLXSPEC_NO_OPENBLAS"):
        STATUS["error"] = "disabled by MLXSPEC_NO_OPENBLAS"
        return STATUS
    path = _find("cmeel.prefix/lib/libopenblas.so.0") or _find("cmeel.prefix/lib/libopenblas.so")
    if path is None:
        STATUS["error"] = "cmeel-openblas not installed"
        return STATUS
    if not os.environ.get(_PROBE_ENV):
        ok, why = _probe_ok(path)
        if not ok:
            STATUS["error"] = why
            return STATUS
    try:
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            _gfortran_shim()
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        STATUS.update(blas="openblas", path=path)
    except OSError as exc:
        STATUS["error"] = str(exc)
    return STATUS
