"""The registry of known models and the formats a model can be installed in (`models pull
NAME --dtype q4` -> folder `NAME-q4`).

The built-in registry ships inside the package (mlxspec/hub/registry.toml; a source
checkout's models/registry.toml links to it). A `registry.toml` in the user's model store
adds entries or replaces built-in ones of the same name."""
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

from mlxspec.errors import ModelNotFoundError, RegistryError, first_line

BUILTIN_REGISTRY = Path(__file__).resolve().with_name("registry.toml")
# A source checkout keeps its model store in the repo's models/ (marked by the link to the
# built-in registry); an installed package uses the user's data folder (hub/store.py).
SOURCE_STORE = Path(__file__).resolve().parents[2] / "models"
# --dtype -> the suffix of the installed folder's name (float32: the CPU's fast dtype, the default)
FORMATS = {"float32": "", "bfloat16": "-bf16", "q8": "-q8", "q4": "-q4"}
QUANT_BITS = {"q8": 8, "q4": 4}
QUANT_GROUP = 64  # mlx-lm's default group size


def registry_file() -> Path:
    """MLXSPEC_REGISTRY replaces the built-in registry (tests, private model lists)."""
    env = os.environ.get("MLXSPEC_REGISTRY")
    return Path(env).expanduser() if env else BUILTIN_REGISTRY


def user_registry_file() -> Path:
    """The store's own registry, which adds to or overrides the built-in one."""
    from mlxspec.hub.store import models_dir  # store.py imports this module at its top

    return models_dir() / "registry.toml"


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
    """One registry file (`path`), or the built-in registry with the store's on top."""
    if path is not None:
        return _read(Path(path))
    out = _read(registry_file())
    user = user_registry_file()
    if user.exists() and user.resolve() not in (registry_file().resolve(), BUILTIN_REGISTRY):
        out.update(_read(user))
    return out


def _read(path: Path) -> dict[str, ModelEntry]:
    if not path.exists():
        return {}
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        if not all(isinstance(v, dict) for v in raw.values()):
            raise ValueError("every entry must be a [\"name\"] table")
    except (OSError, ValueError) as exc:
        raise RegistryError(f"model registry {path} is unreadable: {first_line(exc)}") from None
    known = {f for f in ModelEntry.__dataclass_fields__ if f not in ("name", "extra")}
    out = {}
    for name, spec in raw.items():
        fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items() if k in known}
        try:
            out[name] = ModelEntry(name=name, extra={k: v for k, v in spec.items() if k not in known}, **fields)
        except TypeError as exc:
            raise RegistryError(f"model registry {path}: entry '{name}' is incomplete: {first_line(exc)}") from None
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
