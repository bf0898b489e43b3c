"""Each rank keeps only the weights it runs: rank 0 the embedding, its layers, the norm
and the LM head; rank r > 0 its own block of layers. Weights are loaded lazily, so what
a rank drops is never read from disk."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from mlxspec.distributed.pipeline import Pipeline
from mlxspec.distributed.runner import ShardedRunner


class _Gone(nn.Module):
    """Stands where a dropped module was (keeping what mlx-lm's make_cache reads of a
    layer); running it is a bug."""

    def __init__(self, like=None):
        super().__init__()
        self.use_sliding = getattr(like, "use_sliding", False)

    def __call__(self, *args, **kwargs):
        raise RuntimeError("this rank does not hold that part of the model")


def shard(model, group) -> Pipeline:
    """Split `model` (lazily loaded) across `group`; returns this rank's Pipeline, also
    set as `model.mlxspec_pipeline` (TargetRunner then builds a ShardedRunner)."""
    from mlxspec.runtime.layered import LayeredModel

    lm = LayeredModel(model)  # one line for an architecture we cannot split
    pipe = Pipeline(group, lm.num_layers)
    inner = model.model
    for i in range(lm.num_layers):
        if not pipe.start <= i < pipe.end:
            inner.layers[i] = _Gone(inner.layers[i])
    if pipe.rank != 0:
        inner.embed_tokens = _Gone()
        if hasattr(model, "lm_head"):
            model.lm_head = _Gone()
    pipe.lm = lm
    pipe.own_layers = [lm.layers[i] for i in range(pipe.start, pipe.end)]
    pipe.supports_tree = lm.sliding_window is None and all(_tree_rope(layer) for layer in pipe.own_layers)
    pipe.runner_class = ShardedRunner  # what TargetRunner(model) gives from now on
    model.mlxspec_pipeline = pipe
    mx.eval(model.parameters())
    return pipe


def _tree_rope(layer) -> bool:
    from mlxspec.runtime.layered import TREE_ROPES

    return isinstance(getattr(layer.self_attn, "rope", None), TREE_ROPES)
