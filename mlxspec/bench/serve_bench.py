"""The server's speed, in one run: `mlxspec serve` against `mlxspec generate` in process (the
server's overhead) and against mlx_lm.server on the same model folder, plain and with its
draft model, on the same prompts through the official `openai` client.

    python -m mlxspec.bench.serve_bench -m smollm2-135m-instruct [--reps 3] [-n 128]

Every method decodes greedily (temperature 0) with the same max tokens. One process runs
at a time (so none competes with another for the CPU): each repetition loads each method
in turn (order rotated between repetitions), sends one untimed warm-up request, then the
prompts. tok/s is decode speed as in docs/benchmarks.md: (tokens - 1) / (time from the
first streamed token to the end of the answer), so prefill is excluded uniformly; e2e is
a request's wall time. mlx_lm.server is started through `import mlxspec` first, so it runs
on the same BLAS (OpenBLAS on Linux) as mlxspec.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

START_S = 600  # a big model on a busy machine loads slowly


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A server process, its stderr in a temp file; ready when `ready_path` answers."""

    def __init__(self, cmd: list, url: Optional[str], ready_path: str = "/v1/models"):
        self.log = tempfile.NamedTemporaryFile(prefix="serve-bench-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True)
        self.url, self.ready_path = url, ready_path

    def wait(self) -> str:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args[:6]} exited:\n{self.tail()}")
            if self.url is None:  # mlxspec serve prints its address
                for line in self.tail().splitlines():
                    if " on http://" in line and line.rstrip().endswith("Ctrl-C stops"):
                        self.url = line.split(" on ")[1].split("/v1")[0]
            if self.url is not None:
                try:
                    with urllib.request.urlopen(self.url + self.ready_path, timeout=5):
                        return self.url
                except OSError:
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready in {START_S} s:\n{self.tail()}")

    def tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.unlink(self.log.name)


def timed_stream(chunks, text_of) -> tuple[str, int, float, float]:
    """(text, tokens, decode tok/s, seconds to the end) of a streamed answer; `chunks`
    starts when the request is sent."""
    t0 = time.perf_counter()
    first = last = None
    pieces, usage, n_chunks = [], None, 0
    for c in chunks:
        now = time.perf_counter()
        if getattr(c, "usage", None) is not None:
            usage = c.usage
        if not c.choices:
            continue
        piece = text_of(c.choices[0])
        if piece:
            pieces.append(piece)
            n_chunks += 1
            first = first or now
        last = now
    tokens = usage.completion_tokens if usage is not None else n_chunks
    tps = (tokens - 1) / (last - first) if first is not None and last > first and tokens > 1 else 0.0
    return "".join(pieces), tokens, tps, (last or t0) - t0


def via_client(url: str, model: str, messages: list, n: int, extra: Optional[dict] = None):
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=3600)
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=n, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body=extra or None)
    return timed_stream(stream, lambda ch: ch.delta.content)


def in_process(engine, messages: list, n: int) -> tuple[str, int, float, float]:
    import mlxspec

    t0 = time.perf_counter()
    first = last = None
    pieces, count = [], 0
    for r in mlxspec.stream_chat(engine, messages, max_tokens=n, temp=0.0):
        now = time.perf_counter()
        first, last, count = first or now, now, count + 1
        pieces.append(r.text)
    tps = (count - 1) / (last - first) if count > 1 and last > first else 0.0
    return "".join(pieces), count, tps, (last or t0) - t0


def mlx_lm_cmd(folder: Path, port: int, draft: Optional[Path], num_draft: int) -> list:
    args = ["--model", str(folder), "--port", str(port), "--max-tokens", "4096"]
    if draft is not None:
        args += ["--draft-model", str(draft), "--num-draft-tokens", str(num_draft)]
    code = ("import sys, runpy, mlxspec  # mlxspec first: the same BLAS\n"
            f"sys.argv = ['mlx_lm.server'] + {args!r}\n"
            "runpy.run_module('mlx_lm.server', run_name='__main__')")
    return [sys.executable, "-c", code]


def methods(args, folder: Path, mlx_draft: Optional[Path]) -> list:
    """(name, kind, how): kind 'engine' (in process) or 'server' (a command and request extras)."""
    serve = [sys.executable, "-c", "from mlxspec.cli.main import main; main()", "serve", "-m", args.model,
             "--draft", args.draft, "--port", "0", "--max-queue", "1", "--no-adapt"]
    out = [("mlxspec generate", "engine", None),
           ("mlxspec serve", "server", (serve, None, None)),
           ("mlxspec serve, draft none", "server", (serve, None, {"draft": "none"})),
           ("mlx_lm.server plain", "server", ("mlx_lm", None, None))]
    if mlx_draft is not None:
        out.append(("mlx_lm.server + draft", "server", ("mlx_lm", mlx_draft, None)))
    return out


def run(args) -> dict:
    import mlxspec
    from mlxspec.bench.prompts import load_prompts
    from mlxspec.hub import registry, store

    folder = store.resolve_model(args.model)
    partner = args.mlx_draft or (getattr(_entry(registry, args.model), "draft", None))
    mlx_draft = store.resolve_model(partner) if partner and partner != "none" else None
    prompts = load_prompts(args.prompts)
    table = methods(args, folder, mlx_draft)
    runs = []
    for rep in range(args.reps):
        k = rep % len(table)
        for name, kind, how in table[k:] + table[:k]:
            print(f"[rep {rep + 1}/{args.reps}] {name}", file=sys.stderr, flush=True)
            if kind == "engine":
                engine = mlxspec.load(args.model, args.draft, adapt=False)
                call = lambda msgs, n: in_process(engine, msgs, n)  # noqa: E731
                proc = None
            else:
                cmd, draft, extra = how
                if cmd == "mlx_lm":
                    port = free_port()
                    proc = Proc(mlx_lm_cmd(folder, port, draft, args.num_draft), f"http://127.0.0.1:{port}")
                    model_id = "default_model"
                else:
                    proc, model_id = Proc(cmd, None, "/health"), args.model
                url = proc.wait()
                call = lambda msgs, n: via_client(url, model_id, msgs, n, extra)  # noqa: E731
            try:
                call([{"role": "user", "content": "Hello!"}], 8)  # warm-up, untimed
                for label, msgs in prompts.items():
                    text, tokens, tps, secs = call(msgs, args.max_tokens)
                    runs.append({"method": name, "prompt": label, "rep": rep, "tokens": tokens, "tps": tps,
                                 "e2e_s": secs, "text": text})
            finally:
                if proc is not None:
                    proc.stop()
                engine = None
                gc.collect()
    return {"model": args.model, "draft": args.draft, "mlx_draft": str(mlx_draft) if mlx_draft else None,
            "max_tokens": args.max_tokens, "reps": args.reps, "runs": runs, "methods": [m[0] for m in table]}


def _entry(registry, name):
    try:
        return registry.get_entry(name)
    except Exception:
        return None


def summary(result: dict) -> str:
    runs = result["runs"]
    ref = {(r["prompt"], r["rep"]): r["text"] for r in runs if r["method"] == "mlxspec generate"}
    base = [r["tps"] for r in runs if r["method"] == "mlxspec generate"]
    base_mean = statistics.mean(base) if base else 0.0
    lines = [f"model {result['model']}, mlxspec draft {result['draft']}, mlx_lm.server draft "
             f"{result['mlx_draft'] or 'none'}, greedy, {result['max_tokens']} max tokens, {result['reps']} repetitions",
             f"{'method':40s} {'tok/s (mean ± sd)':>18s} {'vs generate':>11s} {'e2e s':>7s} {'text == generate':>17s}"]
    for m in result["methods"]:
        rs = [r for r in runs if r["method"] == m]
        if not rs:
            continue
        tps = [r["tps"] for r in rs]
        sd = statistics.stdev(tps) if len(tps) > 1 else 0.0
        same = sum(r["text"] == ref.get((r["prompt"], r["rep"])) for r in rs)
        rel = f"{statistics.mean(tps) / base_mean:.3f}" if base_mean else "-"
        lines.append(f"{m:40s} {statistics.mean(tps):9.2f} ± {sd:6.2f} {rel:>11s} "
                     f"{statistics.mean(r['e2e_s'] for r in rs):7.2f} {same:>8d} of {len(rs):<6d}")
    lines.append("tok/s: (tokens - 1) / (first streamed token .. end of answer); e2e: request to end")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m mlxspec.bench.serve_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", default="smollm2-135m-instruct")
    p.add_argument("--draft", default="auto", help="mlxspec's drafter (as --draft of generate and serve)")
    p.add_argument("--mlx-draft", default=None, help="mlx_lm.server's --draft-model (default: the registry's "
                   "draft partner of the model; none to skip)")
    p.add_argument("--num-draft", type=int, default=3, help="mlx_lm.server's --num-draft-tokens (its default 3)")
    p.add_argument("-n", "--max-tokens", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--prompts", default="default", help="a prompt set, file or folder (as mlxspec bench)")
    p.add_argument("--json", dest="json_path", default=None, help="also write every run here (atomically)")
    args = p.parse_args(argv)
    if args.reps < 1 or args.max_tokens < 2:
        p.error("--reps must be >= 1 and --max-tokens >= 2")
    try:
        import openai  # noqa: F401  (the client every server method is measured through)
    except ImportError:
        p.error("needs the openai package: pip install openai (or the project's test extra)")
    result = run(args)
    print(summary(result))
    if args.json_path:
        from mlxspec.atomic import atomic_write_text

        atomic_write_text(args.json_path, json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
