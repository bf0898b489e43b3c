"""The tracked registry of known models (models/registry.toml) and the formats a model
can be installed in (`models pull NAME --dtype q4` -> folder `NAME-q4`)."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from mlxspec.errors import ModelNotFoundError

REGISTRY_FILE = Path(__file__).resolve().parents[2] / "models" / "registry.toml"
# --dtype -> the suffix of the installed folder's name (float32: the CPU's fast dtype, the default)
FORMATS = {"float32": "", "bfloat16": "-bf16", "q8": "-q8", "q4": "-q4"}
QUANT_BITS = {"q8": 8, "q4": 4}
QUANT_GROUP = 64  # mlx-lm's default group size


def registry_file() -> Path:
    """MLXSPEC_REGISTRY overrides the tracked registry (tests, private model lists)."""
    env = os.environ.get("MLXSPEC_REGISTRY")
    return Path(env).expanduser() if env else REGISTRY_FILE


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    arch: str
    source: str  # "pypi-gguf" or "hf"
    packages: tuple = ()
    member: str = ""
    size: Optional[int] = None
    sha256: Optional[str] = None
    hf: Optional[str] = None
    draft: Optional[str] = None
    extra: dict = field(default_factory=dict)


def load_registry(path: Optional[Path] = None) -> dict[str, ModelEntry]:
    path = Path(path) if path else registry_file()
    if not path.exists():
        return {}
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    known = {f for f in ModelEntry.__dataclass_fields__ if f not in ("name", "extra")}
    out = {}
    for name, spec in raw.items():
        fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items() if k in known}
        out[name] = ModelEntry(name=name, extra={k: v for k, v in spec.items() if k not in known}, **fields)
    return out


def known_names() -> list[str]:
    return sorted(load_registry())


def get_entry(name: str) -> ModelEntry:
    reg = load_registry()
    if name not in reg:
        raise ModelNotFoundError(f"unknown model '{name}'; known models: {', '.join(sorted(reg))}")
    return reg[name]


def folder_name(name: str, fmt: str = "float32") -> str:
    return f"{name}{FORMATS[fmt]}"


def split_format(folder: str) -> Optional[tuple[str, str]]:
    """`NAME` or `NAME-q4` (a registry name plus a format suffix) -> (NAME, format);
    None when it is not a registry model."""
    reg = load_registry()
    if folder in reg:
        return folder, "float32"
    for fmt, suffix in FORMATS.items():
        if suffix and folder.endswith(suffix) and folder[: -len(suffix)] in reg:
            return folder[: -len(suffix)], fmt
    return None
