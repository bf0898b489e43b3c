"""mlxspec: lossless speculative decoding for local LLMs on MLX."""
from mlxspec._blas import load_openblas as _load_openblas

_load_openblas()  # must run before the first `import mlx.core`

from mlxspec.api import GenerationResponse, generate, load, stream_generate  # noqa: E402

__all__ = ["load", "generate", "stream_generate", "GenerationResponse"]
__version__ = "0.1.0"
