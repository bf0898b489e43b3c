"""`mlxspec bench --overhead`: what the engine costs around the model, on random-weight
models of real shapes, in one process, against mlx-lm on the same model objects.

Per shape and dtype: mlx-lm plain decoding (mlx_lm.generate.generate_step) against
mlxspec plain decoding, the measured cost curve c(n) (costs.measure: a forward of n
tokens against one), the target as its own draft with k = 4 (every draft is accepted:
what remains is the engine's overhead per round) against mlx-lm's speculative step
(speculative_generate_step with the same model as draft), and the bytes mlxspec reads
from the device per token with the host syncs per decode step (runtime/host.py).
Greedy, so outputs are compared as well. Device-agnostic: it runs on
mx.default_device(), on a CPU or on a GPU alike.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Optional

import mlx.core as mx
import numpy as np


@dataclass(frozen=True)
class Shape:
    model_type: str  # an mlx_lm.models module
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    head_dim: Optional[int] = None
    tied: bool = True


SHAPES = {
    "qwen1.5b": Shape("qwen2", 1536, 28, 12, 2, 8960, 151936),  # Qwen2.5-1.5B
    "smollm2": Shape("llama", 576, 30, 9, 3, 1536, 49152, head_dim=64),  # SmolLM2-135M
}
DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}
PROMPT_LEN = 32
NUM_DRAFT = 4


def random_model(shape: Shape, dtype: str, seed: int = 0):
    """An mlx-lm model of `shape` with random weights, in `dtype`."""
    import importlib

    mod = importlib.import_module(f"mlx_lm.models.{shape.model_type}")
    kw = dict(model_type=shape.model_type, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
              intermediate_size=shape.ffn, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
              rms_norm_eps=1e-6, vocab_size=shape.vocab, tie_word_embeddings=shape.tied)
    if shape.head_dim is not None:
        kw["head_dim"] = shape.head_dim
    mx.random.seed(seed)
    model = mod.Model(mod.ModelArgs(**kw))
    model.set_dtype(DTYPES[dtype])
    mx.eval(model.parameters())
    return model


@dataclass
class Result:
    shape: str
    dtype: str
    tokens: int
    device: str
    mlx_lm_plain_tps: float = 0.0
    mlxspec_plain_tps: float = 0.0
    plain_ratio: float = 0.0  # mlxspec / mlx-lm
    mlx_lm_spec_tps: float = 0.0
    mlxspec_spec_tps: float = 0.0
    spec_ratio: float = 0.0
    cost_curve: dict = field(default_factory=dict)  # n -> c(n)
    plain_bytes_per_token: float = 0.0
    spec_bytes_per_token: float = 0.0
    plain_syncs_per_step: float = 0.0
    spec_syncs_per_round: float = 0.0
    same_tokens: bool = True  # greedy: mlxspec's tokens are mlx-lm's (plain and speculative)


def _timed(tokens: Iterable[int]) -> tuple[list[int], float]:
    """The tokens and the decode rate: (n - 1) / (time from the first to the last)."""
    out, t_first, t_last = [], None, None
    for t in tokens:
        now = time.perf_counter()
        t_first = t_first or now
        t_last = now
        out.append(int(t))
    rate = (len(out) - 1) / (t_last - t_first) if len(out) > 1 and t_last > t_first else 0.0
    return out, rate


def _mlx_lm(model, prompt, n, draft=None):
    from mlx_lm.generate import generate_step, speculative_generate_step

    x = mx.array(prompt, dtype=mx.uint32)
    if draft is None:
        return (t for t, _ in generate_step(x, model, max_tokens=n))
    return (t for t, _, _ in speculative_generate_step(x, model, draft, num_draft_tokens=NUM_DRAFT, max_tokens=n))


def _mlxspec(engine, prompt, n, traffic: dict):
    from mlxspec.sampling import SamplingParams

    engine.reset()
    for ev in engine.tokens(prompt, SamplingParams(), max_tokens=n):
        yield ev.token
    traffic.update(engine.host_traffic())


def measure(name: str, shape: Shape, dtype: str, n: int, reps: int = 1, seed: int = 0,
            progress: Callable[[str], None] = lambda msg: None) -> Result:
    from mlxspec import costs
    from mlxspec.drafters.draft_model import ModelDrafter
    from mlxspec.engine import Engine
    from mlxspec.runtime.target import TargetRunner

    model = random_model(shape, dtype, seed)
    prompt = [int(t) for t in np.random.default_rng(seed).integers(0, shape.vocab, PROMPT_LEN)]
    plain = Engine(model, None, None, model_name=name)
    spec = Engine(model, None, ModelDrafter(model, shape.vocab, min_confidence=0.0), model_name=name,
                  num_draft=NUM_DRAFT, adaptive=False)
    res = Result(name, dtype, n, str(mx.default_device()))
    runs = {
        "mlx_lm_plain": lambda t: _mlx_lm(model, prompt, n),
        "mlxspec_plain": lambda t: _mlxspec(plain, prompt, n, t),
        "mlx_lm_spec": lambda t: _mlx_lm(model, prompt, n, draft=model),
        "mlxspec_spec": lambda t: _mlxspec(spec, prompt, n, t),
    }
    for key, make in runs.items():  # warm-up: kernels compiled, caches allocated
        list(make({}))
    rates: dict = {k: [] for k in runs}
    outs, traffic = {}, {k: {} for k in runs}
    for _ in range(reps):
        for key, make in runs.items():  # interleaved: a slow spell hits every method alike
            progress(f"{name} {dtype}: {key}")
            outs[key], rate = _timed(make(traffic[key]))
            rates[key].append(rate)
    for key in runs:
        setattr(res, f"{key}_tps", round(float(np.median(rates[key])), 2))
    res.plain_ratio = round(res.mlxspec_plain_tps / res.mlx_lm_plain_tps, 3) if res.mlx_lm_plain_tps else 0.0
    res.spec_ratio = round(res.mlxspec_spec_tps / res.mlx_lm_spec_tps, 3) if res.mlx_lm_spec_tps else 0.0
    for key, tkey, skey in (("mlxspec_plain", "plain_bytes_per_token", "plain_syncs_per_step"),
                            ("mlxspec_spec", "spec_bytes_per_token", "spec_syncs_per_round")):
        t = traffic[key]
        setattr(res, tkey, round(t.get("host_bytes", 0) / max(1, len(outs[key])), 1))
        setattr(res, skey, t.get("host_syncs_per_round", 0.0))
    res.same_tokens = outs["mlxspec_plain"] == outs["mlx_lm_plain"] and outs["mlxspec_spec"] == outs["mlx_lm_plain"]
    progress(f"{name} {dtype}: cost curve")
    probe = TargetRunner(model)
    mx.eval(probe.prefill(prompt))
    curve, _ = costs.measure(probe, prompt[-1])
    res.cost_curve = {str(k): round(v, 3) for k, v in curve.points}
    return res


def run(shapes: Iterable[str], dtypes: Iterable[str], n: int, reps: int = 1,
        progress: Callable[[str], None] = lambda msg: None, custom: Optional[dict] = None) -> list[Result]:
    """Every shape (SHAPES' names, or `custom`'s) in every dtype."""
    table = dict(SHAPES, **(custom or {}))
    results = []
    for name in shapes:
        for dtype in dtypes:
            results.append(measure(name, table[name], dtype, n, reps, progress=progress))
            mx.clear_cache()
    return results


_SHOWN = {"2", "4", "5", "8", "9", "12", "16"}  # of c(n) in the table (every size is in the JSON)


def format_table(results: list[Result]) -> str:
    head = ["shape", "dtype", "mlx-lm plain", "mlxspec plain", "ratio", "mlx-lm spec k=4", "mlxspec self k=4",
            "ratio", "bytes/tok plain", "bytes/tok spec", "syncs/step", "syncs/round", "same", "c(n)"]
    rows = [head] + [[r.shape, r.dtype, f"{r.mlx_lm_plain_tps:.2f}", f"{r.mlxspec_plain_tps:.2f}",
                      f"{r.plain_ratio:.2f}x", f"{r.mlx_lm_spec_tps:.2f}", f"{r.mlxspec_spec_tps:.2f}",
                      f"{r.spec_ratio:.2f}x", f"{r.plain_bytes_per_token:g}", f"{r.spec_bytes_per_token:g}",
                      f"{r.plain_syncs_per_step:g}", f"{r.spec_syncs_per_round:g}", "yes" if r.same_tokens else "NO",
                      " ".join(f"{k}:{v:g}" for k, v in r.cost_curve.items() if k in _SHOWN)] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    dev = results[0].device if results else "?"
    lines.append(f"tok/s: decode rate ({results[0].tokens if results else 0} tokens, greedy, random weights) "
                 f"on {dev}; ratio: mlxspec / mlx-lm; c(n): a forward of n tokens / one")
    return "\n".join(lines)


def as_json(results: list[Result]) -> list[dict]:
    return [asdict(r) for r in results]
