"""mlxspec: lossless speculative decoding for local LLMs on MLX."""
from mlxspec._blas import load_openblas as _load_openblas

_load_openblas()  # must run before the first `import mlx.core`

__all__ = ["load", "generate", "stream_generate", "GenerationResponse"]
__version__ = "0.1.0"


def __getattr__(name):
    # Lazy so that `mlxspec models list` and friends start without importing MLX.
    if name in __all__:
        from mlxspec import api

        return getattr(api, name)
    raise AttributeError(f"module 'mlxspec' has no attribute {name!r}")
