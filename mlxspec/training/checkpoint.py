"""A training run's resumable state: `models/<model>/heads/.ckpt-<name>/`.

It holds the head's weights, the optimizer state, the step, the settings' key, the
tokenised corpus and how many teacher windows are done. Head and optimizer files are
named by step and state.json, written last, names them: a kill leaves the previous
checkpoint or this one, never a head of one step with another step's optimizer state.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from mlxspec.atomic import atomic_write_with, clean_stale_temps, discard_dir
from mlxspec.head.io import atomic_save_safetensors, atomic_write_text
from mlxspec.training.progress import log as _log
from mlxspec.training.settings import teacher_key


class Checkpoint:
    def __init__(self, out_dir: Path, name: str, key: dict):
        self.out_dir = Path(out_dir)
        self.dir = self.out_dir / f".ckpt-{name}"
        self.name = name
        self.key = key
        self.state: Optional[dict] = None  # what a resumed run read
        self.fresh_head = False  # the teacher features are kept, the head starts anew
        self.corpus_desc: Optional[dict] = None
        self.teacher_done = 0
        self.head = self.opt = None  # what save() writes, set by track()
        self.step = 0

    def open(self, resume: bool) -> Optional[dict]:
        """The state to resume from (None: start over, the old checkpoint removed).
        A checkpoint of other head settings on the same corpus and teacher keeps its
        teacher features and trains a new head."""
        clean_stale_temps(self.out_dir)  # head files of a killed write
        clean_stale_temps(self.dir)
        state = None
        if self.dir.is_dir() and resume:
            try:
                state = json.loads((self.dir / "state.json").read_text())
                if state.get("key") != self.key:
                    if teacher_key(state.get("key") or {}) == teacher_key(self.key):
                        _log(f"checkpoint {self.dir} has other training settings; keeping its teacher "
                             "features, training a new head")
                        self.fresh_head = True
                    else:
                        _log(f"checkpoint {self.dir} has other settings; starting over")
                        state = None
            except (OSError, ValueError):
                state = None
        if state is None and self.dir.exists():
            discard_dir(self.dir)
        self.state = state
        if state is not None:
            self.corpus_desc = state["corpus_desc"]
            self.teacher_done = int(state.get("teacher_done", 0))
        return state

    def tokens(self) -> np.ndarray:
        return np.load(self.dir / "tokens.npy")

    def begin(self, tokens: Optional[np.ndarray]) -> None:
        """A new run: the folder, and the tokenised corpus (None: rows read from elsewhere)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if tokens is not None:
            atomic_write_with(self.dir / "tokens.npy", lambda tmp: np.save(tmp, tokens), suffix=".npy")

    def track(self, head, opt, resume: bool) -> int:
        """The head and optimizer save() writes; with `resume`, their saved state is
        loaded first. The step they are at."""
        self.head, self.opt = head, opt
        if resume:
            st = self.state
            head.load_weights(str(self.dir / st.get("head_file", "head.safetensors")))
            opt.state = tree_unflatten(list(mx.load(str(self.dir / st.get("opt_file", "opt.safetensors"))).items()))
            self.step = int(st["step"])
        return self.step

    def save(self) -> None:
        step = self.step
        files = {"head_file": f"head-{step:06d}.safetensors", "opt_file": f"opt-{step:06d}.safetensors"}
        atomic_save_safetensors(self.dir / files["head_file"], dict(tree_flatten(self.head.parameters())))
        atomic_save_safetensors(self.dir / files["opt_file"], dict(tree_flatten(self.opt.state)))
        atomic_write_text(self.dir / "state.json", json.dumps(
            {"step": step, "key": self.key, "corpus_desc": self.corpus_desc, "name": self.name,
             "teacher_done": self.teacher_done, **files}))
        for old in [*self.dir.glob("head*.safetensors"), *self.dir.glob("opt*.safetensors")]:
            if old.name not in files.values():
                old.unlink(missing_ok=True)

    def discard(self) -> None:
        discard_dir(self.dir)
