"""Weight formats: float (f32/bf16/f16) and mlx-lm quantized (QuantizedLinear,
QuantizedEmbedding) layers read the same way: dequantized float weights, and an LM head
gathered to a vocabulary subset that runs the layer's own kernel on its rows."""
from __future__ import annotations

from typing import Optional

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

QUANTIZED = (nn.QuantizedLinear, nn.QuantizedEmbedding)


def dequantized(layer) -> mx.array:
    """Float weight (out, in) of a Linear/Embedding layer, quantized or not."""
    if isinstance(layer, QUANTIZED):
        return mx.dequantize(layer["weight"], layer["scales"], layer.get("biases"),
                             group_size=layer.group_size, bits=layer.bits, mode=layer.mode)
    return layer.weight


def dense_params(module: nn.Module) -> dict:
    """`module`'s parameters by mlx-lm name, quantized layers as float `weight`s."""
    out = dict(tree_flatten(module.parameters()))
    for name, m in module.named_modules():
        if isinstance(m, QUANTIZED):
            p = f"{name}." if name else ""
            out.pop(p + "scales", None)
            out.pop(p + "biases", None)
            out[p + "weight"] = dequantized(m)
    return out


def _ids(ids) -> mx.array:
    if isinstance(ids, mx.array):
        return ids.astype(mx.int32)
    return mx.array(np.asarray(ids, dtype=np.int32).reshape(-1))


class HeadRows:
    """The LM head restricted to vocabulary rows `ids`: rows(h)[..., j] equals the full
    head's logits(h)[..., ids[j]] (same weights, same quantized kernel). The rows are
    gathered once (their weight, scales and biases when quantized)."""

    def __init__(self, layer, ids, softcap: Optional[float] = None):
        idx = _ids(ids)
        self.ids = idx
        self.quant = None
        self.weight = layer["weight"][idx]
        if isinstance(layer, QUANTIZED):
            b = layer.get("biases")
            self.quant = (layer["scales"][idx], None if b is None else b[idx],
                          layer.group_size, layer.bits, layer.mode)
        bias = layer.get("bias") if isinstance(layer, (nn.Linear, nn.QuantizedLinear)) else None
        self.bias = None if bias is None else bias[idx]
        self.softcap = softcap
        mx.eval(self.arrays())

    def arrays(self) -> list:
        q = [] if self.quant is None else [a for a in self.quant[:2] if a is not None]
        return [a for a in [self.weight, self.bias] if a is not None] + q

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays())

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __call__(self, h: mx.array) -> mx.array:
        if self.quant is None:
            out = h @ self.weight.T
        else:
            scales, biases, gs, bits, mode = self.quant
            out = mx.quantized_matmul(h, self.weight, scales=scales, biases=biases, transpose=True,
                                      group_size=gs, bits=bits, mode=mode)
        if self.bias is not None:
            out = out + self.bias
        if self.softcap:
            out = mx.tanh(out / self.softcap) * self.softcap
        return out

    logits = __call__

    def dense(self) -> mx.array:
        """(len(ids), d) float32 rows."""
        if self.quant is None:
            return self.weight.astype(mx.float32)
        scales, biases, gs, bits, mode = self.quant
        return mx.dequantize(self.weight, scales, biases, group_size=gs, bits=bits,
                             mode=mode).astype(mx.float32)


class RowView:
    """(V, d) view of an LM head's rows: view[ids] is float32, dequantized on demand
    (for embedding-neighbour search without a dense copy of a quantized head)."""

    def __init__(self, layer, hidden_size: int):
        self._layer = layer
        self.shape = (int(layer["weight"].shape[0]), int(hidden_size))

    def __getitem__(self, ids) -> mx.array:
        if isinstance(ids, (int, np.integer)):
            return HeadRows(self._layer, [int(ids)]).dense()[0]
        return HeadRows(self._layer, ids).dense()


def param_bytes(module) -> int:
    """Bytes of a module's parameters (quantized weights, scales and biases included)."""
    from mlx.utils import tree_flatten

    return sum(v.nbytes for _, v in tree_flatten(module.parameters()))
