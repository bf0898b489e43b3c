"""Head files: `models/<model>/heads/<name>.safetensors` plus `<name>.json`.

The safetensors file is self-contained: head weights under `head.*`, the frequency-ranked
token ids under `core_ids` (longest ranking kept, so the core size can be changed at load
time), and in its metadata the head config, the target's fingerprint and the training
settings. The JSON next to it repeats the settings for people (exit layer, vocab size,
corpus, steps, measured acceptance). Both are written atomically (mlxspec/atomic.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from mlxspec.atomic import atomic_write_text, atomic_write_with  # noqa: F401  (callers use atomic_write_text from here)
from mlxspec.errors import HeadLoadError
from mlxspec.head.model import DraftHead, HeadConfig

FORMAT = 1
HEADS_DIR = "heads"


def heads_dir(model_dir: Path) -> Path:
    return Path(model_dir) / HEADS_DIR


def atomic_save_safetensors(path: Path, arrays: dict, metadata: Optional[dict] = None) -> None:
    """mx.save_safetensors through the one atomic writer (mlxspec/atomic.py)."""
    atomic_write_with(path, lambda tmp: mx.save_safetensors(tmp, arrays, metadata=metadata or {}),
                      suffix=".safetensors")


def save_head(path: Path, head: DraftHead, core_ids: np.ndarray, fingerprint: dict,
              settings: dict) -> None:
    arrays = {f"head.{k}": v for k, v in tree_flatten(head.parameters())}
    arrays["core_ids"] = mx.array(np.asarray(core_ids, dtype=np.int32))
    meta = {
        "mlxspec_head_format": str(FORMAT),
        "config": head.config.to_json(),
        "fingerprint": json.dumps(fingerprint, sort_keys=True),
        "settings": json.dumps(settings, sort_keys=True),
    }
    atomic_save_safetensors(path, arrays, meta)
    atomic_write_text(Path(path).with_suffix(".json"), json.dumps(settings, indent=2, sort_keys=True) + "\n")


class HeadFile:
    def __init__(self, path: Path, weights: dict, core_ids: np.ndarray, config: HeadConfig,
                 fingerprint: dict, settings: dict):
        self.path, self.weights, self.core_ids = path, weights, core_ids
        self.config, self.fingerprint, self.settings = config, fingerprint, settings


def read_head(path: Path) -> HeadFile:
    path = Path(path)
    if not path.is_file():
        raise HeadLoadError(f"draft head {path} does not exist")
    try:
        arrays, meta = mx.load(str(path), return_metadata=True)
    except Exception as exc:
        raise HeadLoadError(f"draft head {path.name} is corrupt or unreadable ({exc})") from None
    try:
        if meta.get("mlxspec_head_format") != str(FORMAT):
            raise ValueError("not an mlxspec draft head (format mismatch)")
        config = HeadConfig.from_json(meta["config"])
        fingerprint = json.loads(meta.get("fingerprint", "{}"))
        settings = json.loads(meta.get("settings", "{}"))
        core = np.array(arrays.pop("core_ids")).astype(np.int32)
    except Exception as exc:
        raise HeadLoadError(f"draft head {path.name} is corrupt ({exc})") from None
    weights = {k[len("head."):]: v for k, v in arrays.items() if k.startswith("head.")}
    return HeadFile(path, weights, core, config, fingerprint, settings)


def check_fingerprint(hf: HeadFile, fingerprint: dict) -> None:
    """Raise HeadLoadError when the head was trained for another model."""
    name = hf.path.name
    for key in ("model_type", "num_layers", "hidden_size", "vocab_size"):
        a, b = hf.fingerprint.get(key), fingerprint.get(key)
        if a != b:
            raise HeadLoadError(f"draft head {name} was trained for another model ({key} {a} != {b})")
    a = np.asarray(hf.fingerprint.get("embed_probe", []), dtype=np.float64)
    b = np.asarray(fingerprint.get("embed_probe", []), dtype=np.float64)
    if a.shape != b.shape or not np.allclose(a, b, atol=2e-3, rtol=2e-2):
        raise HeadLoadError(f"draft head {name} was trained for another model (embedding weights differ)")
