"""What a `train-head` run is given (TrainSettings) and gives back (TrainResult), and
which settings a checkpoint's corpus and teacher features depend on."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional


@dataclass
class TrainSettings:
    exit_layer: Optional[int] = None
    vocab: Optional[int] = None
    steps: int = 300
    batch: int = 8
    seq_len: int = 128
    lr: float = 5e-4
    warmup: int = 20
    ffn_ratio: float = 1.0
    feature_input: bool = False
    feature_noise: float = 0.1  # relative noise on the feature input while training
    init_from: Optional[str] = None  # a head file to start from (fine-tuning), same shape
    hidden_weight: float = 1.0
    unroll: int = 2  # feature-input heads: also train on their own predicted features
    features: Optional[str] = None  # a selfgen folder (tokens + the target's states)
    prompt_weight: float = 0.25  # loss weight of prompt positions in `features` rows
    corpus: list = field(default_factory=list)  # empty: the default offline recipe
    corpus_tokens: int = 150_000
    eval_windows: int = 32
    seed: int = 0
    vocab_mode: str = "dynamic"

    def resume_key(self) -> dict:
        """Settings that must match for a checkpoint to be resumed (steps may grow)."""
        d = asdict(self)
        for k in ("steps", "vocab_mode"):
            d.pop(k)
        return d


# What the tokenised corpus and the teacher's features depend on: a checkpoint whose
# other settings (learning rate, vocabulary, head width...) differ keeps its features.
TEACHER_FIELDS = ("exit_layer", "seq_len", "corpus", "corpus_tokens", "seed", "eval_windows", "features")


def teacher_key(key: dict) -> dict:
    defaults = asdict(TrainSettings())  # fields older checkpoints did not record
    return {k: key.get(k, defaults[k]) for k in TEACHER_FIELDS}


@dataclass
class TrainResult:
    path: Path
    steps: int
    settings: dict
    metrics: dict
