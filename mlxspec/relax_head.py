"""A learned relax weight for one draft/target pair: w = w_max * sigmoid(a . f + c) per
position, the two-way softmax of DIVERSED's weight layer.

DIVERSED feeds the draft's and the target's hidden states to that layer. Verification
here sees only the two distributions (the runners return logits), so f is a handful of
numbers of p and q: their entropies, top probabilities, how much each gives the other's
favourite, and whether the favourites agree. Cheap, and the same at training and at
verification. Trained by training/relax.py; saved atomically under
models/<target>/relax/<draft>.safetensors (beside the target's heads/).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlxspec.errors import InvalidParameterError

RELAX_DIR = "relax"
N_FEATURES = 7
_EPS = 1e-12


def features(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """f(p, q): entropies, log top probabilities, cross log probabilities of the
    favourites, agreement of the favourites."""
    ip, iq = int(np.argmax(p)), int(np.argmax(q))

    def entropy(x):
        nz = x[x > 0]
        return float(-(nz * np.log(nz)).sum())

    lg = lambda v: float(np.log(max(v, _EPS)))  # noqa: E731
    return np.array([entropy(p), entropy(q), lg(p[ip]), lg(q[iq]), lg(p[iq]), lg(q[ip]), float(ip == iq)])


@dataclass
class RelaxHead:
    a: np.ndarray  # (N_FEATURES,)
    c: float
    w_max: float = 0.9
    name: str = "learned"

    def weight_of(self, f: np.ndarray) -> float:
        return float(self.w_max / (1.0 + np.exp(-(float(self.a @ f) + self.c))))

    def weight(self, p: np.ndarray, q: np.ndarray) -> float:
        return self.weight_of(features(p, q))


def relax_path(model_dir: Path, draft_name: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in draft_name)
    return Path(model_dir) / RELAX_DIR / f"{safe}.safetensors"


def save(path: Path, head: RelaxHead, info: dict) -> None:
    """The head (safetensors) and its settings for people (JSON), both atomically."""
    import mlx.core as mx

    from mlxspec.atomic import atomic_write_text
    from mlxspec.head.io import atomic_save_safetensors

    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"a": mx.array(head.a.astype(np.float32)), "c": mx.array(np.array([head.c], np.float32)),
              "w_max": mx.array(np.array([head.w_max], np.float32))}
    atomic_save_safetensors(path, arrays, {"format": "1", "info": json.dumps(info)})
    atomic_write_text(path.with_suffix(".json"), json.dumps(info, indent=1) + "\n")


def load(path: Path) -> RelaxHead:
    import mlx.core as mx

    try:
        arrays = mx.load(str(path))
        a = np.array(arrays["a"], dtype=np.float64)
        c, w_max = float(np.array(arrays["c"])[0]), float(np.array(arrays["w_max"])[0])
    except (OSError, RuntimeError, KeyError, ValueError, IndexError) as exc:
        raise InvalidParameterError(f"relax weight head {path} is missing or corrupt ({exc}); "
                                    f"train one with mlxspec train-relax") from None
    if a.shape != (N_FEATURES,) or not np.isfinite(a).all() or not np.isfinite(c) or not 0 <= w_max < 1:
        raise InvalidParameterError(f"relax weight head {path} is corrupt (bad shapes or values)")
    return RelaxHead(a, c, w_max, name=f"learned:{path.stem}")
