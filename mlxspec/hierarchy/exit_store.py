"""The trained exit on disk: `models/<model>/exits/adapter.safetensors` holds each
candidate layer's statistics (G, B: the fit is recomputed from them, and learning goes
on from them next session) with its counters and the target's fingerprint in the
metadata; `adapter.json` beside it repeats the counters for people. Both are written
atomically (mlxspec/atomic.py): a kill at any moment leaves the last whole file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import mlx.core as mx

from mlxspec.atomic import atomic_write_text, atomic_write_with, clean_stale_temps
from mlxspec.errors import HeadLoadError

FORMAT = 1
EXITS_DIR = "exits"
NAME = "adapter"


def exit_path(model_dir: Path) -> Path:
    return Path(model_dir) / EXITS_DIR / f"{NAME}.safetensors"


def save(path: Path, adapter, fingerprint: dict) -> None:
    adapter.fold()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent)
    arrays = {}
    for m in adapter.layers:
        arrays[f"G.{m}"], arrays[f"B.{m}"] = adapter.G[m], adapter.B[m]
    summary = adapter.summary()
    state = {m: [a.hits, a.rows, a.untrained, a.last] for m, a in adapter.agreement.items()}
    meta = {"mlxspec_exit_format": str(FORMAT), "fingerprint": json.dumps(fingerprint, sort_keys=True),
            "prior_rows": str(adapter.prior_rows), "rows": str(adapter.rows), "fits": str(adapter.fits),
            "agreement_state": json.dumps({str(m): v for m, v in state.items()})}
    atomic_write_with(path, lambda tmp: mx.save_safetensors(tmp, arrays, metadata=meta), suffix=".safetensors")
    atomic_write_text(path.with_suffix(".json"), json.dumps(summary, indent=2, sort_keys=True) + "\n")


def load(path: Path, adapter, fingerprint: dict) -> bool:
    """Fill `adapter` from the file (its layers that the file has) and refit; False when
    there is no file. A damaged file or one of another model: HeadLoadError, one line."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        arrays, meta = mx.load(str(path), return_metadata=True)
    except Exception as exc:  # a truncated or foreign file: say which
        raise HeadLoadError(f"the trained exit {path} cannot be read ({exc.__class__.__name__}); "
                            f"remove it to start afresh") from None
    if meta.get("mlxspec_exit_format") != str(FORMAT):
        raise HeadLoadError(f"{path} is not a trained-exit file of this version")
    if json.loads(meta.get("fingerprint", "{}")) != fingerprint:
        raise HeadLoadError(f"the trained exit {path} was made for another model")
    d = adapter.lm.hidden_size
    state = json.loads(meta.get("agreement_state", "{}"))
    for m in adapter.layers:
        G, B = arrays.get(f"G.{m}"), arrays.get(f"B.{m}")
        if G is None or B is None or G.shape != (d + 1, d + 1) or B.shape != (d + 1, d):
            continue
        adapter.G[m], adapter.B[m] = G, B
        if str(m) in state:
            a = adapter.agreement[m]
            a.hits, a.rows, a.untrained, a.last = state[str(m)]
    adapter.rows = int(meta.get("rows", 0))
    adapter.fits = int(meta.get("fits", 0))
    adapter.refit()
    return True


def info(model_dir: Path) -> Optional[dict]:
    """The trained exit's counters for `mlxspec head info` (None: none saved)."""
    path = exit_path(model_dir)
    if not path.is_file():
        return None
    side = path.with_suffix(".json")
    out = {"path": str(path), "bytes": path.stat().st_size}
    try:
        out.update(json.loads(side.read_text()))
    except (OSError, ValueError):
        out["error"] = f"{side} is missing or unreadable"
    return out
