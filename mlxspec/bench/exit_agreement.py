"""How often an early exit agrees with the target (docs/benchmarks.md, early-exit section):
greedy agreement of the exit at layer m (the target's final norm and LM head on layer-m
states) with the target, teacher-forced over the target's own greedy replies to the
default prompts; beside it a ridge-fitted linear translator (layer-m state -> final
normalised state) fitted on README and docs/ text.

    python -m mlxspec.bench.exit_agreement -m smollm2-135m-instruct --layers 8,12,16,20,24,27
"""
from __future__ import annotations

import glob
import json
from pathlib import Path

import click


@click.command()
@click.option("-m", "--model", default=None)
@click.option("--layers", default="8,12,16,20,24", show_default=True)
@click.option("--fit-tokens", type=int, default=12000, show_default=True)
@click.option("-n", "--max-tokens", type=int, default=96, show_default=True)
def main(model, layers, fit_tokens, max_tokens):
    import mlxspec  # noqa: F401 (BLAS first)
    import mlx.core as mx
    import numpy as np

    from mlxspec import loading
    from mlxspec.bench.prompts import load_prompts
    from mlxspec.engine import Engine
    from mlxspec.prompting import encode_chat
    from mlxspec.runtime.layered import LayeredModel
    from mlxspec.sampling import SamplingParams

    t = loading.load_model(model)
    lm = LayeredModel(t.model)
    want = [int(x) for x in layers.split(",")]

    def states(tokens):
        h, out = lm.embed(tokens), {}
        for i in range(lm.num_layers):
            h = lm.layers[i](h, "causal", None)
            if i + 1 in want:
                out[i + 1] = h[0]
        return out, lm.norm(h)[0]

    root = Path(__file__).resolve().parents[2]
    text = "\n".join(Path(p).read_text() for p in sorted(glob.glob(str(root / "docs" / "*.md"))) + [root / "README.md"])
    ids = list(t.tokenizer.encode(text))[:fit_tokens]
    xs, fs = {m: [] for m in want}, []
    for i in range(0, len(ids), 256):
        s, f = states(ids[i : i + 256])
        for m in want:
            xs[m].append(np.array(s[m].astype(mx.float32)))
        fs.append(np.array(f.astype(mx.float32)))
    F = np.concatenate(fs)
    W = {}
    for m in want:
        A = np.concatenate(xs[m]).astype(np.float64)
        A = np.hstack([A, np.ones((len(A), 1))])
        G = A.T @ A
        W[m] = np.linalg.solve(G + 1e-2 * np.trace(G) / G.shape[0] * np.eye(G.shape[0]), A.T @ F).astype(np.float32)
    eng, out = Engine(t.model, t.tokenizer), {}
    for name, msgs in load_prompts("default").items():
        prompt = encode_chat(t.tokenizer, msgs)
        reply = [r.token for r in eng.stream(prompt, SamplingParams(), max_tokens=max_tokens)]
        s, f = states(prompt + reply[:-1])
        final = np.array(mx.argmax(lm.logits(f[len(prompt) - 1 :]), axis=-1))
        row = {}
        for m in want:
            h = s[m][len(prompt) - 1 :]
            plain = np.array(mx.argmax(lm.logits(lm.norm(h)), axis=-1))
            hw = np.hstack([np.array(h.astype(mx.float32)), np.ones((h.shape[0], 1), np.float32)]) @ W[m]
            linear = np.array(mx.argmax(lm.logits(mx.array(hw)), axis=-1))
            row[m] = {"untrained": round(float((plain == final).mean()), 3),
                      "linear": round(float((linear == final).mean()), 3)}
        out[name] = row
    click.echo(json.dumps({"model": t.name, "layers": lm.num_layers, "fit_tokens": len(ids), "agreement": out}))


if __name__ == "__main__":
    main()
