"""The linear draft head: an affine map in front of the target's own LM head, learnt in
closed form (adapt/ridge_trainer.py), no transformer block.

    x = [norm(h_k) ; f ; 1]      norm: the target's final norm; f: the target's final
                                 normalised state one position back (true after a
                                 verification, the head's own prediction inside a chain)
    hn = x @ W                   the predicted final normalised state
    logits = hn @ W_lm[subset]

It starts as the untrained exit at layer k (W = [I; 0; 0]: f ignored). Fitted by ridge
regression to the target's final states over what the rounds already computed, it learns
from a few hundred rows (one reply's prompt and reply) where an SGD-trained block needs
thousands of steps; see docs/benchmarks.md, "A head that learns in closed form".
It keeps no cache of its own: the runner skips the head cache (`uses_cache`).
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlxspec.head.model import HeadConfig
from mlxspec.runtime.layered import block_class_and_args

LINEAR = "linear"


class LinearHead(nn.Module):
    uses_cache = False

    def __init__(self, model: nn.Module, config: HeadConfig):
        super().__init__()
        d = config.hidden_size
        eps = getattr(block_class_and_args(model)[2], "rms_norm_eps", 1e-6)
        self.norm = type(model.model.norm)(d, eps=eps)
        d_in = 2 * d if config.feature_input else d
        self.readout = nn.Linear(d_in, d, bias=True)
        self.config = config

    def features(self, h: mx.array, feat: Optional[mx.array] = None) -> mx.array:
        """The map's input rows (without the constant 1) for states h (..., d)."""
        x = self.norm(h).astype(mx.float32)
        if self.config.feature_input:
            f = mx.zeros_like(x) if feat is None else feat.astype(mx.float32)
            x = mx.concatenate([x, f], axis=-1)
        return x

    def __call__(self, h: mx.array, feat: Optional[mx.array] = None, mask=None, cache=None,
                 positions: Optional[mx.array] = None) -> mx.array:
        """Predicted final normalised state per position of h; positions are independent
        rows, so masks, caches and tree positions do not matter."""
        return self.readout(self.features(h, feat)).astype(h.dtype)

    def set_map(self, W: mx.array) -> None:
        """W (d_in + 1, d): rows for the inputs, then the bias row."""
        self.readout.weight = W[:-1].T
        self.readout.bias = W[-1]
        mx.eval(self.readout.parameters())

    def as_map(self) -> mx.array:
        return mx.concatenate([self.readout.weight.T, self.readout.bias[None]], axis=0)

    def num_params(self) -> int:
        return sum(v.size for _, v in tree_flatten(self.parameters()))

    def nbytes(self) -> int:
        from mlxspec.runtime.weights import param_bytes

        return param_bytes(self)


def identity_map(config: HeadConfig) -> mx.array:
    """W0: the untrained exit at layer k (norm(h_k) passes through, f is ignored)."""
    d = config.hidden_size
    d_in = 2 * d if config.feature_input else d
    return mx.concatenate([mx.eye(d), mx.zeros((d_in - d + 1, d))], axis=0)
