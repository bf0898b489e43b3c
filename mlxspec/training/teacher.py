"""The target as teacher: its layer-k and final normalised states for a batch of token
windows (one full pass, no cache), and the teacher-forced acceptance proxies of a head
on held-out windows or on stored states."""
from __future__ import annotations

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
