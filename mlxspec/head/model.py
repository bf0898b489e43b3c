"""The compact draft head: one transformer block of the target's own architecture.

    h_k  (hidden state after the target's first k layers, exact: they are the target's
          layers over the shared KV cache)
    x  = h_k                 or, for a feature-input head (EAGLE-style),
    x  = fuse([h_k ; f])     f = the target's final normalised hidden state one position
                             back (the true one after verification, the head's own
                             prediction inside a draft chain)
    y  = block(x)            one mlx-lm TransformerBlock (own small KV cache), built from
                             the target's ModelArgs, optionally with a narrower MLP
    hn = RMSNorm(y)          trained copy of the target's final norm
    logits = hn @ W[subset]  the target's LM head restricted to the draft vocabulary

The block is initialised from the target's layer k (the layer the draft skips first), so
an untrained head already approximates "one more layer"; distillation then teaches it to
jump to the final hidden state.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Optional

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.models.base import create_attention_mask

from mlxspec.runtime.layered import LayeredModel, block_class_and_args, check_architecture, dense_params
from mlxspec.runtime.tree_attention import tree_block


@dataclass
class HeadConfig:
    exit_layer: int
    intermediate_size: int
    model_type: str = ""
    num_layers: int = 0
    hidden_size: int = 0
    vocab_size: int = 0
    feature_input: bool = False
    format: int = 1
    kind: str = "block"  # or "linear" (head/linear.py)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "HeadConfig":
        d = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def default_exit_layer(num_layers: int) -> int:
    """About a quarter of the depth (at least 1, leaving at least 1 layer to verify)."""
    return max(1, min(num_layers - 1, round(num_layers / 4)))


class DraftHead(nn.Module):
    uses_cache = True  # its block's own KV cache, which the runner keeps (a linear head has none)

    def __init__(self, model: nn.Module, config: HeadConfig):
        super().__init__()
        Block, Args, args = block_class_and_args(model)
        params = dataclasses.asdict(args) if dataclasses.is_dataclass(args) else dict(vars(args))
        params["intermediate_size"] = config.intermediate_size
        block_args = Args.from_dict(params) if hasattr(Args, "from_dict") else Args(**params)
        self.block = Block(block_args)
        if hasattr(self.block, "use_sliding"):
            self.block.use_sliding = False
        eps = getattr(args, "rms_norm_eps", 1e-6)
        # The target's own norm class (gemma's scales by 1 + weight), so the copied
        # final-norm weight means the same thing.
        self.norm = type(model.model.norm)(config.hidden_size, eps=eps)
        if config.feature_input:
            self.fuse = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=False)
        self.config = config
        self._array_mask = check_architecture(model).array_mask

    def __call__(self, h: mx.array, feat: Optional[mx.array] = None, mask=None, cache=None,
                 positions: Optional[mx.array] = None) -> mx.array:
        """Predicted final *normalised* hidden state for each position of h. `feat` (same
        shape as h) is the previous position's final normalised hidden state; only
        feature-input heads use it (None there means "unknown": zeros). `positions`
        (with a tree mask): the tokens' own positions, for draft-tree nodes."""
        if self.config.feature_input:
            if feat is None:
                feat = mx.zeros_like(h)
            h = self.fuse(mx.concatenate([h, feat.astype(h.dtype)], axis=-1))
        if positions is not None:
            return self.norm(tree_block(self.block, h, mask, cache, positions))
        if isinstance(mask, str) and self._array_mask:  # gemma2's attention reads mask.dtype
            mask = create_attention_mask(h, cache, return_array=True)
        return self.norm(self.block(h, mask, cache))

    def num_params(self) -> int:
        return sum(v.size for _, v in tree_flatten(self.parameters()))

    def nbytes(self) -> int:
        from mlxspec.runtime.weights import param_bytes

        return param_bytes(self)


def make_head(model: nn.Module, config: HeadConfig) -> nn.Module:
    """An (untrained) head of the config's kind."""
    if config.kind == "block":
        return DraftHead(model, config)
    from mlxspec.head.linear import LINEAR, LinearHead

    if config.kind != LINEAR:
        raise ValueError(f"unknown head kind {config.kind!r}")
    return LinearHead(model, config)


def new_head(model: nn.Module, exit_layer: Optional[int] = None, ffn_ratio: float = 1.0,
             feature_input: bool = False, init_layer: Optional[int] = None, kind: str = "block") -> nn.Module:
    """A head for `model`, its block initialised from the target's layer `init_layer`
    (default: `exit_layer`, the first layer the draft skips; a feature input starts as
    [I 0]: h_k passes through, the feature is learnt). kind "linear": the untrained exit
    at layer k with a map to learn (head/linear.py)."""
    lm = LayeredModel(model)
    k = default_exit_layer(lm.num_layers) if exit_layer is None else int(exit_layer)
    if not 1 <= k < lm.num_layers:
        from mlxspec.errors import InvalidParameterError

        raise InvalidParameterError(f"exit layer must be in 1..{lm.num_layers - 1}, got {k}")
    if kind != "block":
        return _new_linear(model, lm, k, feature_input, kind)
    src = k if init_layer is None else int(init_layer) % lm.num_layers
    # Float copies of the target's weights (dequantized when the target is quantized):
    # the head itself is float32 whatever the target's format.
    src_params = {n: w.astype(mx.float32) for n, w in dense_params(lm.layers[src]).items()}
    full_ffn = int(src_params["mlp.gate_proj.weight"].shape[0])
    ffn = max(8, int(round(full_ffn * ffn_ratio)))
    cfg = HeadConfig(
        exit_layer=k,
        intermediate_size=ffn,
        model_type=str(lm.model_type),
        num_layers=lm.num_layers,
        hidden_size=lm.hidden_size,
        vocab_size=lm.vocab_size,
        feature_input=bool(feature_input),
    )
    head = DraftHead(model, cfg)
    # Copy the target's layer k (MLP rows/cols cut to the head's width) and final norm.
    new = []
    for name, v in tree_flatten(head.block.parameters()):
        w = src_params.get(name)
        if w is None:
            continue
        if w.shape != v.shape:
            w = w[tuple(slice(0, s) for s in v.shape)]
        new.append((name, mx.array(w)))
    head.block.load_weights(new, strict=False)
    head.norm.weight = lm.inner.norm.weight.astype(mx.float32)
    if feature_input:
        d = lm.hidden_size
        head.fuse.weight = mx.concatenate([mx.eye(d), mx.zeros((d, d))], axis=1)
    mx.eval(head.parameters())
    return head


def _new_linear(model, lm, k: int, feature_input: bool, kind: str):
    from mlxspec.head.linear import identity_map

    cfg = HeadConfig(exit_layer=k, intermediate_size=0, model_type=str(lm.model_type), num_layers=lm.num_layers,
                     hidden_size=lm.hidden_size, vocab_size=lm.vocab_size, feature_input=bool(feature_input),
                     kind=kind)
    head = make_head(model, cfg)
    head.norm.weight = lm.inner.norm.weight.astype(mx.float32)
    head.set_map(identity_map(cfg))
    return head
