"""The local model store: where models live, how a --model spec resolves, what is
installed, what `models rm` may delete, and the leftovers of killed pulls."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mlxspec.atomic import clean_stale_temps, discard_dir, is_temp, pid_alive, tree_size
from mlxspec.errors import MlxspecError, ModelNotFoundError, first_line
from mlxspec.hub.check import PARTIAL_MARKER, check_model_dir  # noqa: F401  (store.check_model_dir)
from mlxspec.hub.registry import SOURCE_STORE, known_names, split_format

HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.tiktoken", "*.txt"]
PULL_PREFIX = ".pull-"  # a pull's work folder: .pull-NAME-PID
STORE_FILE = "reply-store.safetensors"  # drafters/reply_store.py's name; not imported (upward)


def models_dir() -> Path:
    env = os.environ.get("MLXSPEC_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    if (SOURCE_STORE / "registry.toml").exists():  # running from a source checkout: the repo's models/
        return SOURCE_STORE
    from platformdirs import user_data_dir

    return Path(user_data_dir("mlxspec")) / "models"


def _known() -> str:
    return ", ".join(known_names()) or "(none)"


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~", "/"))


def pull_command(folder: str) -> str:
    name, fmt = split_format(folder) or (folder, "float32")
    return f"mlxspec models pull {name}" + ("" if fmt == "float32" else f" --dtype {fmt}")


def resolve_model(spec: str) -> Path:
    """A registry name (optionally with a format suffix, `NAME-q4`), a local folder, or a
    Hugging Face repo id -> a local folder."""
    if split_format(spec) is not None:
        path = models_dir() / spec
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"model '{spec}' is not installed; run: {pull_command(spec)}")
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


def hub_error_message(repo_id: str, exc: BaseException) -> str:
    """One complete line: what went wrong with the hub and what to do instead."""
    from huggingface_hub import errors as hub

    if isinstance(exc, hub.GatedRepoError):
        why = "the repo is gated: accept its terms on huggingface.co, then log in with: hf auth login"
    elif isinstance(exc, hub.RepositoryNotFoundError):
        why = "no such repo on the hub (or it is private: log in with: hf auth login)"
    elif isinstance(exc, hub.RevisionNotFoundError):
        why = "the requested revision does not exist"
    elif isinstance(exc, (hub.LocalEntryNotFoundError, hub.OfflineModeIsEnabled, ConnectionError)):
        why = "it is not in the local hub cache and the hub cannot be reached (offline)"
    else:
        why = " ".join(first_line(exc).removeprefix("Got:").split())
    return (f"could not get '{repo_id}' from the Hugging Face hub: {why}; "
            f"without the hub, install a known model with: mlxspec models pull NAME ({_known()})")


def _download_from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except Exception as exc:
        raise ModelNotFoundError(hub_error_message(repo_id, exc)) from None


# -- what is installed ---------------------------------------------------------------------
@dataclass
class InstalledModel:
    name: str
    path: Path
    size_bytes: int
    arch: str
    heads: list = field(default_factory=list)  # [(head name, bytes)], .safetensors + .json
    reply_store: Optional[int] = None  # bytes, when the model has one
    fmt: str = ""  # float32, bfloat16, q8, q4 (from config.json)


_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def _format(folder: Path, cfg: dict) -> str:
    """q8/q4 from the quantization config, else the dtype of the first weight tensor."""
    from mlxspec.hub.check import _check_safetensors, weight_files

    q = cfg.get("quantization")
    if isinstance(q, dict) and q.get("bits"):
        return f"q{q['bits']}"
    try:
        header = _check_safetensors(weight_files(folder)[0])
        return next(_DTYPES.get(v["dtype"], v["dtype"].lower()) for k, v in header.items() if k != "__metadata__")
    except (MlxspecError, OSError, IndexError, StopIteration, KeyError, TypeError, AttributeError):
        return "?"


def _heads(model: Path) -> list:
    d = model / "heads"
    if not d.is_dir():
        return []
    out = []
    for h in sorted(d.glob("*.safetensors")):
        if h.name.startswith(".") or is_temp(h):
            continue
        side = h.with_suffix(".json")
        out.append((h.stem, h.stat().st_size + (side.stat().st_size if side.is_file() else 0)))
    return out


def list_installed() -> list[InstalledModel]:
    root = models_dir()
    out = []
    if not root.is_dir():
        return out
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (d / "config.json").exists() or (d / PARTIAL_MARKER).exists():
            continue
        try:
            cfg = json.loads((d / "config.json").read_text())
            arch, fmt = cfg.get("model_type", "?"), _format(d, cfg)
        except (ValueError, UnicodeDecodeError, AttributeError):
            arch, fmt = "corrupt config", "?"
        store = d / STORE_FILE
        out.append(InstalledModel(d.name, d, tree_size(d), arch, _heads(d),
                                  store.stat().st_size if store.is_file() else None, fmt))
    return out


# -- leftovers of killed pulls, and removal ----------------------------------------------
def _pull_pid(name: str) -> int:
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def clean_stale_pulls(root: Optional[Path] = None) -> tuple[int, int]:
    """Remove the work folders of pulls whose process is gone (.pull-NAME-PID, and the
    older code's .old-NAME-PID) and stale temp files; returns (folders removed, bytes)."""
    root = Path(root) if root else models_dir()
    if not root.is_dir():
        return 0, 0
    count, freed = 0, clean_stale_temps(root)
    for p in root.iterdir():
        if not (p.name.startswith((PULL_PREFIX, ".old-")) and p.is_dir() and not p.is_symlink()):
            continue
        pid = _pull_pid(p.name)
        if pid == os.getpid() or pid_alive(pid):
            continue
        size = tree_size(p)
        shutil.rmtree(p, ignore_errors=True)
        if not p.exists():
            count, freed = count + 1, freed + size
    return count, freed


class RefusedError(MlxspecError):
    pass


def removable(spec: str) -> Path:
    """The store folder `models rm SPEC` may delete: a registry name (with format suffix)
    or the name of a folder directly inside the store, never anything outside it."""
    root = models_dir()
    name = spec
    if "/" in spec or os.sep in spec:
        # a path is accepted only when it is a store folder itself (not through a link)
        p = Path(spec).expanduser()
        if p.is_symlink() or not p.is_dir() or p.resolve().parent != root.resolve():
            raise RefusedError(f"refusing to remove '{spec}': models rm only removes models in the store "
                               f"{root} (give a name from: mlxspec models list)")
        name = p.name
    if not name or name in (".", "..") or name.startswith("."):
        raise RefusedError(f"refusing to remove '{spec}': not a model name (see: mlxspec models list)")
    path = root / name
    if path.is_symlink():
        raise RefusedError(f"refusing to remove '{spec}': {path} is a link, not a model folder; "
                           "remove the link yourself if you want it gone")
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"model '{spec}' is not installed in {root} (see: mlxspec models list)")
    return path


def remove_model(spec: str) -> Path:
    """Delete a store model; a kill mid-way leaves no half model under its name."""
    path = removable(spec)
    discard_dir(path)
    return path
