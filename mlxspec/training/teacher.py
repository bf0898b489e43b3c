"""The target as teacher: its layer-k and final normalised states for a batch of token
windows (one full pass, no cache), and the teacher-forced acceptance proxies of a head
on held-out windows or on stored states."""
from __future__ import annotations

import sys
import time
from typing import Optional

import mlx.core as mx
import numpy as np

from mlxspec.head.model import DraftHead
from mlxspec.head.objective import score_batches
from mlxspec.runtime.layered import LayeredModel


class Teacher:
    def __init__(self, model, exit_layer: int):
        self.lm = LayeredModel(model)
        self.k = exit_layer

    def __call__(self, x: mx.array):
        lm = self.lm
        h_k = lm.run_layers(lm.embed(x), 0, self.k, None, mask="causal")
        h_n = lm.norm(lm.run_layers(h_k, self.k, lm.num_layers, None, mask="causal"))
        return mx.stop_gradient(h_k), mx.stop_gradient(h_n)


def evaluate(model, head: DraftHead, windows: np.ndarray, core_ids: np.ndarray,
             batch: int = 8) -> dict:
    """Teacher-forced acceptance proxies on held-out corpus windows (see score_batches)."""
    teacher = Teacher(model, head.config.exit_layer)

    def batches():
        for i in range(0, len(windows), batch):
            h_k, t_hn = teacher(mx.array(windows[i : i + batch]))
            yield h_k, t_hn, None

    return score_batches(head, batches(), LayeredModel(model).lm_head_weight, core_ids)


def evaluate_features(model, head: DraftHead, hk: np.ndarray, hn: np.ndarray, weights: np.ndarray,
                      core_ids: np.ndarray, batch: int = 8) -> dict:
    """The same proxies on stored target states, counting positions with weight > 0."""
    def batches():
        for i in range(0, len(hk), batch):
            yield mx.array(hk[i : i + batch]), mx.array(hn[i : i + batch]), mx.array(weights[i : i + batch])

    return score_batches(head, batches(), LayeredModel(model).lm_head_weight, core_ids)


def teacher_features(model, exit_layer: int, windows: np.ndarray, ckpt, batch: int,
                     progress: bool, should_stop) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The teacher's layer-k and final states of every training window, computed once
    into memory-mapped files in the checkpoint and resumed where a run stopped. None
    when `should_stop()` ended it first (the files and the count are saved)."""
    from mlxspec.training.progress import bar, log

    n, seq_len = windows.shape
    d = LayeredModel(model).hidden_size
    hk_path, hn_path = ckpt.dir / "teacher_hk.npy", ckpt.dir / "teacher_hn.npy"
    done = ckpt.teacher_done
    mode = "r+" if done and hk_path.exists() else "w+"
    if mode == "w+":
        done = 0
    hk = np.lib.format.open_memmap(hk_path, mode=mode, dtype=np.float32, shape=(n, seq_len, d))
    hn = np.lib.format.open_memmap(hn_path, mode=mode, dtype=np.float32, shape=(n, seq_len, d))

    def save():
        hk.flush()
        hn.flush()
        ckpt.teacher_done = done
        ckpt.save()

    teacher = Teacher(model, exit_layer)
    try:
        t0, i0 = time.perf_counter(), done
        while done < n:
            j = min(n, done + batch)
            h_k, t_hn = teacher(mx.array(windows[done:j]))
            mx.eval(h_k, t_hn)
            hk[done:j] = np.array(h_k)
            hn[done:j] = np.array(t_hn)
            done = j
            if progress:
                bar(done, n, t0, i0, "teacher windows", unit="win")
            if (done // batch) % 25 == 0:
                save()
            if should_stop():
                break
        if progress and done > i0:
            sys.stderr.write("\n")
        if done < n:
            save()
            log(f"stopped while computing teacher features ({done}/{n}); run again to resume")
            return None
    except KeyboardInterrupt:
        save()
        raise
    ckpt.teacher_done = done
    return hk, hn
