"""Integrity checks of a model folder: cheap ones at every load, a full scan at pull time.

Only the model's own files are checked (config.json, the weight files its index lists or
`model*.safetensors`, a tokenizer): trained heads (heads/), the reply store and temp files
of a killed write are not the model, and a bad one must not stop the model loading.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from mlxspec.atomic import clean_stale_temps, is_temp
from mlxspec.errors import ModelLoadError

PARTIAL_MARKER = ".partial"
INDEX_FILE = "model.safetensors.index.json"
_TOKENIZER_SETS = (("tokenizer.json",), ("tokenizer.model",), ("vocab.json", "merges.txt"))


def reinstall_hint(path: Path) -> str:
    """What the user can do about a broken folder: the pull command where it is a store
    model (trained heads and the reply store survive --force), else where to look."""
    from mlxspec.hub.registry import split_format
    from mlxspec.hub.store import models_dir

    path = Path(path)
    try:
        in_store = path.resolve().parent == models_dir().resolve()
    except OSError:
        in_store = False
    base = split_format(path.name) if in_store else None
    if base is not None:
        name, fmt = base
        extra = "" if fmt == "float32" else f" --dtype {fmt}"
        return f"re-install it with: mlxspec models pull {name}{extra} --force (trained heads and the reply store are kept)"
    return "copy the model folder again from its source"


def weight_files(path: Path) -> list[Path]:
    """The model's weight files: those its index lists, else `model*.safetensors`."""
    path = Path(path)
    index = path / INDEX_FILE
    if index.exists():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"corrupt {INDEX_FILE} in {path} ({type(exc).__name__}); "
                                 f"{reinstall_hint(path)}") from None
        return [path / n for n in names]
    return sorted(p for p in path.glob("model*.safetensors") if not is_temp(p))


def _check_safetensors(path: Path) -> dict:
    """Header parses and the file is exactly as long as the header says (cheap, no load);
    returns the header."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n <= 0 or 8 + n > size:
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, struct.error, UnicodeDecodeError, KeyError, TypeError, IndexError) as exc:
        raise ModelLoadError(f"corrupt weights file {path} ({type(exc).__name__}: {exc}); "
                             f"{reinstall_hint(path.parent)}") from None
    if 8 + n + end != size:
        raise ModelLoadError(f"incomplete weights file {path} ({size} bytes, expected {8 + n + end}); "
                             f"{reinstall_hint(path.parent)}")
    return header


def check_model_dir(path: Path) -> None:
    """Raise ModelLoadError (one line) unless `path` looks like a complete model folder.
    Temp files left by a killed write (in the folder and heads/) are removed."""
    path = Path(path)
    for folder in (path, path / "heads"):
        clean_stale_temps(folder)
    if (path / PARTIAL_MARKER).exists():
        raise ModelLoadError(f"{path} is an interrupted download; run mlxspec models pull again")
    cfg = path / "config.json"
    if not cfg.exists():
        raise ModelLoadError(f"no config.json in {path}: not a model folder")
    try:
        json.loads(cfg.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"corrupt config.json in {path} ({type(exc).__name__}); {reinstall_hint(path)}") from None
    weights = weight_files(path)
    if not weights:
        raise ModelLoadError(f"no weights (model*.safetensors) in {path}; {reinstall_hint(path)}")
    missing = [w.name for w in weights if not w.is_file()]
    if missing:
        raise ModelLoadError(f"missing weight files in {path}: {', '.join(missing)}; {reinstall_hint(path)}")
    for w in weights:
        _check_safetensors(w)
    if not any(all((path / f).exists() for f in group) for group in _TOKENIZER_SETS) \
            and not any(path.glob("*.tiktoken")):
        raise ModelLoadError(f"no tokenizer in {path} (tokenizer.json is missing); {reinstall_hint(path)}")


def check_finite(path: Path, progress: Optional[Callable[[int, int], None]] = None) -> None:
    """Scan every floating weight for NaN/inf (a bad conversion loads fine and then
    generates garbage); ModelLoadError naming the first bad tensor."""
    from safetensors import safe_open

    path = Path(path)
    files = weight_files(path)
    total = sum(len([k for k in _check_safetensors(f) if k != "__metadata__"]) for f in files)
    done = 0
    for f in files:
        as_mx = None  # bfloat16 has no numpy dtype: read such a file through MLX
        with safe_open(str(f), framework="numpy") as st:
            for name in st.keys():
                done += 1
                try:
                    w = st.get_tensor(name)
                except (TypeError, ValueError):
                    import mlx.core as mx

                    as_mx = as_mx or mx.load(str(f))
                    w = np.array(as_mx[name].astype(mx.float32))
                if np.issubdtype(w.dtype, np.floating) and not np.isfinite(w).all():
                    bad = int((~np.isfinite(w)).sum())
                    raise ModelLoadError(
                        f"converted weights are broken: {name} in {f.name} has {bad} NaN/inf values "
                        f"of {w.size}; the source file is damaged or its format is not supported")
                if progress:
                    progress(done, total)
