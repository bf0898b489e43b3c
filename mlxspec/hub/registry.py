"""The tracked registry of known models (models/registry.toml)."""
from __future__ import annotations

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


def load_registry(path: Path = REGISTRY_FILE) -> dict[str, ModelEntry]:
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
