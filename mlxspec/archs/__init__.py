"""Model code that exposes hidden states and per-layer entry/exit (see layered.py)."""
from mlxspec.archs.layered import LayeredModel, UnsupportedArchitectureError  # noqa: F401
