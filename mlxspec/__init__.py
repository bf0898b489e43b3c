"""mlxspec: lossless speculative decoding for local LLMs on MLX."""
import os as _os

# Full float32 matmuls on CUDA (and Apple's M5 matrix units), where MLX otherwise runs
# them at TF32 precision: a batched verify and a one-token step then differ by ~1e-2 in
# the logits and greedy near-ties flip, so speculative output would not equal plain
# output. Must be set before mlx.core loads; a user's explicit choice wins.
_os.environ.setdefault("MLX_ENABLE_TF32", "0")

from mlxspec.system.blas import load_openblas as _load_openblas  # noqa: E402

_load_openblas()  # must run before the first `import mlx.core`

__all__ = ["load", "generate", "stream_generate", "stream_chat", "GenerationResponse", "SamplingParams", "SpecStats",
           "IdleTrainer", "Learning", "DEFAULT_IDLE_S"]
# Front ends that own an engine on one thread (the chat, the server) train its head between
# replies with IdleTrainer (Learning: an engine's adapting drafter); from mlxspec.adapt.idle.
_FROM = {n: "mlxspec.adapt.idle" for n in ("IdleTrainer", "Learning", "DEFAULT_IDLE_S")}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlxspec")
    except PackageNotFoundError:  # a source tree on sys.path, not installed
        return "0+source"


__version__ = _version()


def __getattr__(name):
    # Lazy so that `mlxspec models list` and friends start without importing MLX.
    if name in __all__:
        from importlib import import_module

        return getattr(import_module(_FROM.get(name, "mlxspec.api")), name)
    raise AttributeError(f"module 'mlxspec' has no attribute {name!r}")
