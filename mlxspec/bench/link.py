"""Plain vs speculative decoding of a target split over distributed ranks, as the link
between the ranks gets slower (issue 25). Run it under mlx.launch, e.g.

    mlx.launch -n 2 --backend ring -- python -m mlxspec.bench.link -m smollm2-135m-instruct \\
        --draft lookup --delays 0,0.2,1,5 --temps 0,0.7

Each delay (milliseconds, added before every message between two ranks) stands for a
real link: about 0.2 ms for Thunderbolt, 1-5 ms for Ethernet between machines. One
process, one loaded engine; plain and speculative alternate per prompt, so drift hits
both alike. Decode tok/s (the prefill excluded), mean ± sd over prompts and repeats.
Rank 0 prints the table (stdout) and progress (stderr); -o writes the runs as JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import mlxspec


def _decode(engine, chat, temp: float, n: int, seed: int, speculative: bool) -> dict:
    last = None
    for last in mlxspec.stream_chat(engine, chat, max_tokens=n, temp=temp, seed=seed, speculative=speculative):
        pass
    s = last.stats
    return {"tps": last.generation_tps, "tokens": last.generation_tokens,
            "acceptance": s.acceptance_rate, "comm_s": s.extra.get("distributed", {}).get("comm_s")}


def _ms(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):6.2f} ± {sd:4.2f}"


def main(argv=None) -> int:
    from mlxspec.bench.prompts import DEFAULT

    ap = argparse.ArgumentParser(prog="python -m mlxspec.bench.link", description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("--draft", default="lookup")
    ap.add_argument("--delays", default="0,0.2,1,5", help="milliseconds per message, comma-separated")
    ap.add_argument("--temps", default="0,0.7")
    ap.add_argument("-n", "--max-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args(argv)
    engine = mlxspec.load(args.model, draft=args.draft)  # ranks > 0 serve their layers in here
    pipe = getattr(engine.model, "mlxspec_pipeline", None)
    if pipe is None:
        print("note: one process (not under mlx.launch): the delays do not apply", file=sys.stderr)
    prompts = list(DEFAULT.items())
    _decode(engine, prompts[0][1], 0.0, 8, 0, True)  # warm-up: compile, cost probe
    runs, rows = [], []
    for delay in [float(x) for x in args.delays.split(",")]:
        if pipe is not None:
            pipe.delay_s = delay / 1e3
        for temp in [float(x) for x in args.temps.split(",")]:
            got = {"plain": [], engine.draft_name: []}
            for rep in range(args.repeats):
                for name, chat in prompts:
                    for method, spec in (("plain", False), (engine.draft_name, True)):
                        t0 = time.perf_counter()
                        r = _decode(engine, chat, temp, args.max_tokens, rep, spec)
                        r.update(delay_ms=delay, temp=temp, prompt=name, method=method, wall_s=time.perf_counter() - t0)
                        runs.append(r)
                        got[method].append(r)
                        print(f"delay {delay} ms T={temp} {name} {method}: {r['tps']:.2f} tok/s", file=sys.stderr)
            plain = [r["tps"] for r in got["plain"]]
            spec = [r["tps"] for r in got[engine.draft_name]]
            acc = [r["acceptance"] for r in got[engine.draft_name] if r["acceptance"] is not None]
            rows.append((delay, temp, _ms(plain), _ms(spec), statistics.mean(spec) / statistics.mean(plain),
                         statistics.mean(acc) if acc else float("nan")))
    ranks = pipe.size if pipe is not None else 1
    print(f"{engine.model_name}, {ranks} rank(s), draft {engine.draft_name}, {args.max_tokens} tokens, "
          f"{len(prompts)} prompts x {args.repeats}")
    print(f"{'delay ms':>8} {'T':>4} {'plain tok/s':>15} {'spec tok/s':>15} {'spec/plain':>10} {'acceptance':>10}")
    for d, t, p, s, ratio, acc in rows:
        print(f"{d:8g} {t:4g} {p:>15} {s:>15} {ratio:10.2f} {acc:10.2f}")
    if args.output:
        from mlxspec.atomic import atomic_write_text

        atomic_write_text(args.output, json.dumps({"model": engine.model_name, "ranks": ranks, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
