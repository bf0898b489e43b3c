"""How well the trained exit learns over a use session, at every candidate layer
(docs/benchmarks.md, "The trained exit"): the session's prompts in order (code, legal,
medical), each answered greedily by the target; before a reply is learnt from, each
candidate exit (fitted on every earlier prompt and reply) is scored on the reply's
positions against the target's own tokens (prequential), beside the untrained exit.
The learning is hierarchy/exit_adapter.py's own, fed as the engine's tap feeds it.

    python -m mlxspec.bench.exit_session -m smollm2-135m-instruct --per-domain 8 -n 48
"""
from __future__ import annotations

import json
import sys

import click


@click.command()
@click.option("-m", "--model", default=None)
@click.option("--per-domain", type=int, default=8, show_default=True)
@click.option("-n", "--max-tokens", type=int, default=48, show_default=True)
@click.option("--layers", default=None, help="Candidate exit layers (default: the adapter's).")
@click.option("--prior-rows", type=float, default=None)
def main(model, per_domain, max_tokens, layers, prior_rows):
    import mlxspec  # noqa: F401 (BLAS first)
    import mlx.core as mx

    from mlxspec import loading
    from mlxspec.bench.use_session import session
    from mlxspec.engine import Engine
    from mlxspec.hierarchy.exit_adapter import PRIOR_ROWS, ExitAdapter
    from mlxspec.prompting import encode_chat
    from mlxspec.runtime.exit_tap import run_split
    from mlxspec.runtime.layered import LayeredModel
    from mlxspec.sampling import SamplingParams

    from mlxspec.errors import MlxspecError, first_line

    try:
        t = loading.load_model(model)
    except MlxspecError as exc:
        click.echo(f"error: {first_line(exc)}", err=True)
        sys.exit(2)
    lm = LayeredModel(t.model)
    ad = ExitAdapter(lm, [int(x) for x in layers.split(",")] if layers else None,
                     PRIOR_ROWS if prior_rows is None else prior_rows)
    eng = Engine(t.model, t.tokenizer)
    rows = []
    for i, (domain, text) in enumerate(session(per_domain)):
        prompt = encode_chat(t.tokenizer, [{"role": "user", "content": text}])
        reply = [r.token for r in eng.stream(prompt, SamplingParams(), max_tokens=max_tokens)]
        tokens = prompt + reply[:-1]
        h, states = run_split(lm.embed(tokens), 0, lm.num_layers, ad.layers,
                              lambda x, a, b: lm.run_layers(x, a, b, None, "causal"))
        hn = lm.norm(h)
        start = len(prompt) - 1  # the rows that predict the reply's tokens
        want = mx.argmax(lm.logits(hn[:, start:])[0], axis=-1)
        row = {"i": i, "domain": domain, "tokens": int(want.shape[0])}
        for m in ad.layers:
            h_m = states[m][:, start:]
            trained = mx.argmax(lm.logits(ad.state(m, h_m))[0], axis=-1)
            untrained = mx.argmax(lm.logits(lm.norm(h_m))[0], axis=-1)
            row[m] = (float((trained == want).mean()), float((untrained == want).mean()))
        rows.append(row)
        ad.observe(states, hn, prompt=True)
        ad.refit()
        click.echo(f"{i:2d} {domain:8s} " + "  ".join(f"@{m} {row[m][0]:.2f} (untrained {row[m][1]:.2f})"
                                                     for m in ad.layers), err=True)
    out = {}
    for domain in dict.fromkeys(r["domain"] for r in rows):
        mine = [r for r in rows if r["domain"] == domain]
        half = mine[len(mine) // 2:]
        n = sum(r["tokens"] for r in half)
        out[domain] = {str(m): {"trained": round(sum(r[m][0] * r["tokens"] for r in half) / n, 3),
                                "untrained": round(sum(r[m][1] * r["tokens"] for r in half) / n, 3)}
                       for m in ad.layers}
    click.echo(json.dumps({"model": t.name, "layers": lm.num_layers, "prior_rows": ad.prior_rows,
                           "second_half": out}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
