"""What "greedy speculative output equals plain output" can mean in each dtype, and the
check the equality tests and `python -m mlxspec.eval.lossless` use.

Speculation verifies drafts with one batched forward; plain decoding runs one token at a
time. Both compute the same logits, but a backend may round them differently (another
kernel, blocking or reduction order for n rows than for one). Say the two computations
of a row differ by at most D in every entry. If plain picks a and the batched pass b,
plain's own margin z_a - z_b is at most (z_a - z'_a) + (z'_a - z'_b) + (z'_b - z_b)
<= 2D, since the batched pass has z'_b >= z'_a. So a divergence is allowed only at a
position where the plain path's top-2 margin is within 2D, and the first divergence must
pick a token within 2D of plain's top; after it the two texts have different contexts
and are not compared further.

D per dtype: KAPPA ulps of the row's largest logit, D = KAPPA * u * max|z|, with u the
unit roundoff (bfloat16 2^-8, float16 2^-11). In float32 the check is strict: on this
CPU and on CUDA with TF32 off (mlxspec sets MLX_ENABLE_TF32=0) batched and one-token
forwards agree to ~1e-5 relative and greedy output is bitwise equal (docs/lossless.md).
Quantized weights run their matmuls in the dtype of their scales and activations (q4
of a float32 model: float32, strict; q4 of a bfloat16 model: bfloat16).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

UNIT_ROUNDOFF = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11, "float32": 0.0}
KAPPA = 8  # ulps of the largest logit one computation may differ from another (docs/lossless.md)


def tie_bound(dtype: str, top_logit: float) -> float:
    """2D: the largest plain top-2 margin at which a batched pass may pick another token."""
    name = str(dtype).replace("mlx.core.", "")
    if name not in UNIT_ROUNDOFF:
        raise ValueError(f"no tie bound for dtype {dtype!r}")
    return 2.0 * KAPPA * UNIT_ROUNDOFF[name] * abs(float(top_logit))


@dataclass
class Divergence:
    position: int  # index into the generated tokens
    plain: int
    spec: int
    margin: float  # plain's top-2 logit margin there
    gap: float  # plain's logit of its token minus its logit of spec's token
    bound: float

    @property
    def near_tie(self) -> bool:
        return self.gap <= self.bound


def first_divergence(plain: Sequence[int], spec: Sequence[int]) -> Optional[int]:
    """The first index where the two token lists differ (a shorter list that is a prefix
    of the other differs at its end), None when equal."""
    for i, (a, b) in enumerate(zip(plain, spec)):
        if a != b:
            return i
    return None if len(plain) == len(spec) else min(len(plain), len(spec))


def plain_logits_at(model, prompt: Sequence[int], tokens: Sequence[int], position: int) -> np.ndarray:
    """Plain decoding's logits (float32 numpy) for generated token `position`: the prompt
    prefilled, then one token per forward, as the plain path computes them."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    out = model(mx.array([list(prompt)]), cache=cache)[:, -1]
    for t in tokens[:position]:
        out = model(mx.array([[int(t)]]), cache=cache)[:, -1]
    return np.array(out.astype(mx.float32))[0]


def check_greedy(model, prompt: Sequence[int], plain: Sequence[int], spec: Sequence[int],
                 dtype: str) -> Optional[Divergence]:
    """None when spec == plain; else the first divergence (its `near_tie` says whether
    the dtype allows it). A length difference with equal prefix is never allowed."""
    i = first_divergence(plain, spec)
    if i is None:
        return None
    if i >= len(plain) or i >= len(spec):
        return Divergence(i, -1, -1, float("inf"), float("inf"), 0.0)
    z = plain_logits_at(model, prompt, plain, i)
    top2 = np.sort(z)[-2:]
    return Divergence(i, int(plain[i]), int(spec[i]), float(top2[1] - top2[0]),
                      float(z[plain[i]] - z[spec[i]]), tie_bound(dtype, float(np.abs(z).max())))


def assert_greedy_lossless(model, prompt, plain, spec, dtype: str) -> None:
    """Strict equality in float32; elsewhere a first divergence only at a near-tie."""
    d = check_greedy(model, prompt, plain, spec, dtype)
    if d is not None and not d.near_tie:
        raise AssertionError(f"greedy output diverges at token {d.position} ({d.plain} -> {d.spec}) where "
                             f"plain's logit gap is {d.gap:.4g} > the {dtype} tie bound {d.bound:.4g}")


def main(argv=None) -> int:
    """Greedy speculative vs plain output of a real model in a dtype, per prompt: equal,
    or where the first divergence is and whether it is a near-tie."""
    import argparse
    import json
    import sys

    import mlx.core as mx

    from mlxspec.bench.prompts import DEFAULT
    from mlxspec.drafters.draft_model import ModelDrafter
    from mlxspec.drafters.lookup import LookupDrafter
    from mlxspec.engine import Engine
    from mlxspec.errors import MlxspecError, first_line
    from mlxspec.loading import check_tokenizers, load_model
    from mlxspec.prompting import encode_chat
    from mlxspec.sampling import SamplingParams

    ap = argparse.ArgumentParser(prog="python -m mlxspec.eval.lossless", description=main.__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("--draft", default="lookup", help="lookup, or a draft model of the same family")
    ap.add_argument("--dtype", default="bfloat16", choices=sorted(UNIT_ROUNDOFF))
    ap.add_argument("-n", "--max-tokens", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.max_tokens < 1:
        ap.error(f"--max-tokens must be at least 1, got {a.max_tokens}")
    dtype = getattr(mx, a.dtype)
    try:
        target = load_model(a.model)
        target.model.set_dtype(dtype)
        if a.draft == "lookup":
            drafter = LookupDrafter()
        else:
            draft = load_model(a.draft)
            check_tokenizers(target, draft)
            draft.model.set_dtype(dtype)
            drafter = ModelDrafter(draft.model, target.vocab_size)
    except MlxspecError as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 2
    plain_engine = Engine(target.model, target.tokenizer)
    spec_engine = Engine(target.model, target.tokenizer, drafter, adaptive=False)
    rows = []
    for name, chat in DEFAULT.items():
        prompt = encode_chat(target.tokenizer, chat)
        plain = [r.token for r in plain_engine.stream(prompt, SamplingParams(), max_tokens=a.max_tokens)]
        out = list(spec_engine.stream(prompt, SamplingParams(), max_tokens=a.max_tokens))
        spec = [r.token for r in out]
        d = check_greedy(target.model, prompt, plain, spec, a.dtype)
        row = {"prompt": name, "tokens": len(plain), "equal": d is None,
               "accepted": out[-1].stats.accepted if out else 0}
        if d is not None:
            row.update(position=d.position, margin=d.margin, gap=d.gap, bound=d.bound, near_tie=d.near_tie)
        rows.append(row)
        print(f"{name}: " + ("equal" if d is None else
              f"diverges at {d.position}: gap {d.gap:.4g}, bound {d.bound:.4g}, near-tie {d.near_tie}"), file=sys.stderr)
    if a.json:
        print(json.dumps({"model": target.name, "draft": a.draft, "dtype": a.dtype, "rows": rows}))
    return 0 if all(r["equal"] or r.get("near_tie") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
