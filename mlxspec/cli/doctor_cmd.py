"""`mlxspec doctor`: what backend, device and BLAS this machine gives MLX."""
from __future__ import annotations

import json
import platform
import time

import click


def measure_gflops(n: int = 1024, reps: int = 10) -> float:
    import mlx.core as mx

    a = mx.random.normal((n, n))
    b = mx.random.normal((n, n))
    mx.eval(a @ b)
    t0 = time.perf_counter()
    for _ in range(reps):
        mx.eval(a @ b)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def machine_info() -> dict:
    from importlib.metadata import version

    import mlx.core as mx

    from mlxspec import __version__
    from mlxspec.system.blas import STATUS

    def v(pkg):
        try:
            return version(pkg)
        except Exception:
            return "not installed"

    metal = bool(mx.metal.is_available())
    cuda = bool(getattr(mx, "cuda", None) and mx.cuda.is_available())
    return {
        "backend": "metal" if metal else "cuda" if cuda else "cpu",
        "mlxspec": __version__,
        "mlx": v("mlx"),
        "mlx-lm": v("mlx-lm"),
        "numpy": v("numpy"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": __import__("os").cpu_count(),
        "device": str(mx.default_device()),
        "metal": metal,
        "cuda": cuda,
        "blas": STATUS["blas"],
        "blas_path": STATUS["path"],
        "blas_error": STATUS["error"],
        "f32_matmul": "full float32" if __import__("os").environ.get("MLX_ENABLE_TF32") == "0"
        else "TF32 allowed (MLX_ENABLE_TF32 set by the user)",
    }


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout (every key, nulls too).")
def doctor(as_json):
    """Print backend, device, BLAS in use (measured GFLOP/s) and versions."""
    info = machine_info()
    info["matmul_gflops_f32_1024"] = round(measure_gflops(), 1)
    if as_json:
        click.echo(json.dumps(info, indent=1))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            if value is not None:
                click.echo(f"{key:<{width}}  {value}")
    if info["blas"] != "openblas" and not info["metal"] and "linux" in info["platform"].lower():
        click.echo("note: MLX is using its slow reference BLAS; speculative decoding will not pay off "
                   "(pip install cmeel-openblas)", err=True)
