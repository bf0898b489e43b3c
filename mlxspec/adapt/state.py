"""Persistence of online adaptation, per model, safe against kill -9 at any moment.

    models/<model>/heads/adapted.safetensors (+ adapted.json)   the adapted head: an
        ordinary head file (mlxspec.head.io), loadable by load_head_drafter; its
        settings carry `adapt_gen`, the generation of the state below
    models/<model>/heads/.adapt/opt-<gen>.safetensors           AdamW state
    models/<model>/heads/.adapt/counts-<gen>.npy                decayed token counts
    models/<model>/heads/.adapt/state-<gen>.json                counters (tokens_seen,
        updates, optimiser steps, per-reply acceptance oldest first, buffer summary)

save() writes a new generation's state files, then the head file (the one commit point:
an atomic rename), then removes the other generations. A kill before the head's rename
leaves the previous generation, whose files are still there; load() reads the head's
generation. The head file is loadable on its own even if the state files are gone.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import mlx.core as mx
import numpy as np

from mlxspec.atomic import atomic_write_text, atomic_write_with, clean_stale_temps, discard_dir
from mlxspec.errors import HeadLoadError, MlxspecError
from mlxspec.head.io import HeadFile, atomic_save_safetensors, heads_dir, read_head, save_head
from mlxspec.head.model import DraftHead

ADAPTED = "adapted"
STATE_DIR = ".adapt"
MAX_ACCEPTANCE = 10000  # per-reply rates kept (oldest dropped first)
_GEN_RE = re.compile(r"^(opt|counts|state)-(\d{6,})\.(safetensors|npy|json)$")


class AdaptStateError(MlxspecError):
    pass


@dataclass
class Counters:
    tokens_seen: int = 0
    text_tokens: int = 0  # tokens of the person's files read (adapt/texts.py)
    updates: int = 0
    steps: int = 0  # optimiser steps
    acceptance: list = field(default_factory=list)  # per reply, oldest first
    buffer: dict = field(default_factory=dict)  # StateBuffer.summary() at the last save
    base: Optional[str] = None  # the head adaptation started from
    gen: int = 0

    def record_reply(self, acceptance: Optional[float]) -> None:
        if acceptance is not None:
            self.acceptance.append(round(float(acceptance), 4))
            del self.acceptance[:-MAX_ACCEPTANCE]

    @classmethod
    def from_dict(cls, d: dict) -> "Counters":
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Loaded:
    head_file: HeadFile
    counters: Counters
    optimizer_state: Optional[dict]  # None when its file is missing (fresh optimiser)
    counts: Optional[np.ndarray]


def adapted_path(model_dir: Path) -> Path:
    return heads_dir(model_dir) / f"{ADAPTED}.safetensors"


def state_dir(model_dir: Path) -> Path:
    return heads_dir(model_dir) / STATE_DIR


def _files(sd: Path, gen: int) -> dict:
    g = f"{gen:06d}"
    return {"opt": sd / f"opt-{g}.safetensors", "counts": sd / f"counts-{g}.npy", "state": sd / f"state-{g}.json"}


def save(model_dir: Path, head: DraftHead, core_ids: np.ndarray, fingerprint: dict, counters: Counters,
         optimizer_state: Optional[dict] = None, counts: Optional[np.ndarray] = None,
         settings: Optional[dict] = None) -> Path:
    """Write the next generation of the adapted head and its state; returns the head path.
    `counters.gen` is advanced only once the head file (the commit point) is in place."""
    model_dir = Path(model_dir)
    sd = state_dir(model_dir)
    sd.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(sd)
    clean_stale_temps(heads_dir(model_dir))
    gen = counters.gen + 1
    f = _files(sd, gen)
    if optimizer_state:
        atomic_save_safetensors(f["opt"], {k: v for k, v in optimizer_state.items()})
    if counts is not None:
        arr = np.asarray(counts, dtype=np.float64)
        atomic_write_with(f["counts"], lambda tmp: np.save(tmp, arr), suffix=".npy")
    state = asdict(counters)
    state["gen"] = gen
    atomic_write_text(f["state"], json.dumps(state, sort_keys=True) + "\n")
    cfg = head.config
    meta = {"name": ADAPTED, "exit_layer": cfg.exit_layer, "feature_input": cfg.feature_input,
            "head_params": head.num_params(), "head_bytes": head.nbytes(), **(settings or {}),
            "adapt_gen": gen, "adapted": {"tokens_seen": counters.tokens_seen, "updates": counters.updates,
                                          "steps": counters.steps, "base": counters.base}}
    path = adapted_path(model_dir)
    save_head(path, head, core_ids, fingerprint, meta)  # commit point: the head's rename
    counters.gen = gen
    for p in sd.iterdir():
        m = _GEN_RE.match(p.name)
        if m and int(m.group(2)) != gen:
            p.unlink(missing_ok=True)
    return path


def load(model_dir: Path) -> Optional[Loaded]:
    """The last committed state, or None when the model has no adapted head. A corrupt
    head file raises HeadLoadError (one line); missing state files give fresh counters
    (from the head's own settings) and no optimiser state."""
    model_dir = Path(model_dir)
    path = adapted_path(model_dir)
    if not path.is_file():
        return None
    hf = read_head(path)
    gen = int(hf.settings.get("adapt_gen", 0) or 0)
    f = _files(state_dir(model_dir), gen)
    try:
        counters = Counters.from_dict(json.loads(f["state"].read_text()))
    except (OSError, ValueError, TypeError, AttributeError):
        a = hf.settings.get("adapted") or {}
        counters = Counters(tokens_seen=int(a.get("tokens_seen", 0)), updates=int(a.get("updates", 0)),
                            steps=int(a.get("steps", 0)), base=a.get("base"))
    counters.gen = gen
    opt = None
    if f["opt"].is_file():
        try:
            opt = dict(mx.load(str(f["opt"])))
        except Exception:  # a damaged optimiser file costs only the moments: start fresh
            opt = None
    counts = None
    if f["counts"].is_file():
        try:
            counts = np.load(f["counts"])
        except (OSError, ValueError):
            counts = None
    return Loaded(hf, counters, opt, counts)


def reset(model_dir: Path) -> list[Path]:
    """Remove the adapted head and its state (only those, only inside the model's
    folder). The head goes first: a kill mid-way leaves no adapted head, and the state
    files left behind are ignored and cleaned by the next save."""
    model_dir = Path(model_dir)
    root = model_dir.resolve()
    targets = [adapted_path(model_dir), adapted_path(model_dir).with_suffix(".json"), state_dir(model_dir)]
    hd = heads_dir(model_dir)
    if hd.exists() and root not in hd.resolve().parents:  # heads/ is a link to elsewhere
        raise AdaptStateError(f"refusing to reset: {hd} points outside the model folder {model_dir}")
    removed = []
    for t in targets:
        if t.is_symlink() or t.is_file():  # a link itself goes, never what it points to
            t.unlink()
            removed.append(t)
        elif t.is_dir():
            discard_dir(t)
            removed.append(t)
    return removed


def info(model_dir: Path) -> dict:
    """What `mlxspec head info --json` prints: the model's heads with sizes and the
    adaptation counters."""
    from mlxspec.atomic import is_temp, tree_size

    model_dir = Path(model_dir)
    hd = heads_dir(model_dir)
    heads = []
    if hd.is_dir():
        for h in sorted(hd.glob("*.safetensors")):
            if h.name.startswith(".") or is_temp(h):
                continue
            side = h.with_suffix(".json")
            heads.append({"name": h.stem, "path": str(h), "adapted": h.stem == ADAPTED,
                          "bytes": h.stat().st_size + (side.stat().st_size if side.is_file() else 0)})
    out = {"model_dir": str(model_dir), "heads": heads, "adapted": False, "tokens_seen": 0, "text_tokens": 0,
           "updates": 0, "steps": 0, "acceptance": [], "base": None, "buffer": {}, "state_bytes": 0}
    try:
        got = load(model_dir)
    except HeadLoadError as exc:
        out["error"] = str(exc)
        return out
    if got is not None:
        c = got.counters
        out.update(adapted=True, kind=got.head_file.config.kind, tokens_seen=c.tokens_seen, text_tokens=c.text_tokens,
                   updates=c.updates, steps=c.steps,
                   acceptance=list(c.acceptance), base=c.base, buffer=c.buffer,
                   state_bytes=tree_size(state_dir(model_dir)) if state_dir(model_dir).is_dir() else 0)
    return out
