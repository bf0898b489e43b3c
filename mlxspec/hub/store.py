"""The local model store: where models live, how a --model spec resolves, integrity checks."""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from mlxspec.errors import ModelLoadError, ModelNotFoundError
from mlxspec.hub.registry import REGISTRY_FILE, known_names, load_registry

PARTIAL_MARKER = ".partial"
HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.tiktoken", "*.txt"]


def models_dir() -> Path:
    env = os.environ.get("MLXSPEC_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    if REGISTRY_FILE.exists():  # running from a source checkout: the repo's models/
        return REGISTRY_FILE.parent
    from platformdirs import user_data_dir

    return Path(user_data_dir("mlxspec")) / "models"


def _known() -> str:
    return ", ".join(known_names()) or "(none)"


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~", "/"))


def resolve_model(spec: str) -> Path:
    """A registry name, a local folder, or a Hugging Face repo id -> a local folder."""
    if spec in load_registry():
        path = models_dir() / spec
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"model '{spec}' is not installed; run: mlxspec models pull {spec}")
        return path
    local = Path(spec).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelNotFoundError(f"'{spec}' is a file, not a model folder")
        return local
    if _looks_like_hub_id(spec):
        return _download_from_hub(spec)
    raise ModelNotFoundError(
        f"unknown model '{spec}': not a registry name, a folder or a hub id; known models: {_known()}"
    )


def _download_from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(
            f"could not get '{repo_id}' from the Hugging Face hub ({reason[:160]}); offline, install a "
            f"known model with: mlxspec models pull NAME ({_known()})"
        ) from None


def _check_safetensors(path: Path) -> None:
    """Header parses and the file is exactly as long as the header says (cheap, no load)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n <= 0 or 8 + n > size:
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"corrupt weights file {path} ({exc}); re-install the model") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise ModelLoadError(
            f"incomplete weights file {path} ({size} bytes, expected {8 + n + end}); re-install the model"
        )


def check_model_dir(path: Path) -> None:
    """Raise ModelLoadError (one line) unless `path` looks like a complete model folder."""
    path = Path(path)
    if (path / PARTIAL_MARKER).exists():
        raise ModelLoadError(f"{path} is an interrupted download; run mlxspec models pull again")
    cfg = path / "config.json"
    if not cfg.exists():
        raise ModelLoadError(f"no config.json in {path}: not a model folder")
    try:
        json.loads(cfg.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"corrupt config.json in {path} ({exc})") from None
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise ModelLoadError(f"no weights (*.safetensors) in {path}")
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError) as exc:
            raise ModelLoadError(f"corrupt {index.name} in {path} ({exc})") from None
        missing = sorted(s for s in shards if not (path / s).exists())
        if missing:
            raise ModelLoadError(f"missing weight shards in {path}: {', '.join(missing)}")
    for w in weights:
        _check_safetensors(w)
    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")):
        raise ModelLoadError(f"no tokenizer files in {path}")


@dataclass
class InstalledModel:
    name: str
    path: Path
    size_bytes: int
    arch: str
    heads: list[str]


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def list_installed() -> list[InstalledModel]:
    root = models_dir()
    out = []
    if not root.exists():
        return out
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (d / "config.json").exists():
            continue
        try:
            arch = json.loads((d / "config.json").read_text()).get("model_type", "?")
        except ValueError:
            arch = "corrupt config"
        heads = sorted(h.stem for h in (d / "heads").glob("*.safetensors")) if (d / "heads").is_dir() else []
        out.append(InstalledModel(d.name, d, _dir_size(d), arch, heads))
    return out
