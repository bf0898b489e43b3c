"""`mlxspec bench`: every method on the same prompts, in one process and one run.

Methods: mlx-lm's own plain and speculative decoding (the baselines), mlxspec plain, and
each mlxspec drafter available. Decode speed is (tokens - 1) / (time from the first to
the last token) for every method alike, so prefill is excluded uniformly.

Draft counts are measured for every method: mlxspec's from its SpecStats, mlx-lm's by
counting the draft model's and the target's decode forwards (mlx-lm yields only
`from_draft` per kept token, not what the draft proposed; each draft forward after the
prompt proposes one token and each target forward after it is one verification round).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import mlx.core as mx

from mlxspec.engine import Engine
from mlxspec.sampling import SamplingParams


@dataclass
class Run:
    method: str
    prompt: str
    temp: float
    tokens: list[int]
    tps: float
    peak_gb: float
    drafted: Optional[int] = None
    accepted: Optional[int] = None
    rounds: Optional[int] = None
    relaxed_tokens: Optional[int] = None  # relaxed verification's counters (mlxspec/relaxed.py)
    relax_checked: Optional[int] = None
    tv_mean: Optional[float] = None
    early_exit: Optional[dict] = None  # early-exit verification's counters (mlxspec/hierarchy)
    host_bytes_per_token: Optional[float] = None  # mlxspec's device->host bytes (runtime/host.py)
    host_syncs_per_round: Optional[float] = None


@dataclass
class Method:
    name: str
    stream: Callable[[list[int], float, int, int], Iterator]  # (prompt, temp, max_tokens, seed)
    kind: str  # "mlxspec" or "mlx-lm" (stats come from different places)
    draft_bytes: int = 0
    draft_k: int = 0
    notes: dict = field(default_factory=dict)
    verify: str = "exact"  # relaxed rows are not compared with plain decoding


def _time_stream(responses) -> tuple[list, float]:
    """Consume a response stream; decode tok/s between the first and last token."""
    items, t_first, t_last = [], None, None
    for r in responses:
        now = time.perf_counter()
        t_first = t_first or now
        t_last = now
        items.append(r)
    n = len(items)
    tps = (n - 1) / (t_last - t_first) if n > 1 and t_last > t_first else 0.0
    return items, tps


def mlxspec_method(name: str, engine: Engine, top_p: float = 1.0) -> Method:
    """A method of an engine; its verification mode is the engine's own."""
    def stream(prompt, temp, max_tokens, seed):
        engine.reset()  # every run prefills from scratch, like mlx-lm's
        params = SamplingParams(temp=temp, top_p=top_p if temp > 0 else 1.0)
        return engine.stream(prompt, params, max_tokens=max_tokens, seed=seed)

    drafter = engine.drafter
    return Method(name, stream, "mlxspec", draft_bytes=drafter.memory_bytes() if drafter else 0,
                  verify=engine.verify_mode)


class _DecodeCounter:
    """Stands in for a model inside mlx-lm's generator and counts its decode forwards:
    calls whose input reaches past the prompt's second-last token (prefill chunks stop
    before the last prompt token, whatever their size)."""

    def __init__(self, model, prompt_len: int):
        self._model, self._prefix, self.calls = model, prompt_len - 1, 0

    def __call__(self, x, cache=None, **kw):
        start = cache[0].offset if cache else 0
        if start + x.shape[-1] > self._prefix:
            self.calls += 1
        return self._model(x, cache=cache, **kw)

    def __getattr__(self, name):  # layers, make_cache, args...: the real model's
        return getattr(self._model, name)


def mlx_lm_method(name: str, model, tokenizer, draft_model=None, num_draft: int = 4,
                  top_p: float = 1.0) -> Method:
    from mlx_lm.generate import stream_generate
    from mlx_lm.sample_utils import make_sampler

    counted: dict = {}

    def stream(prompt, temp, max_tokens, seed):
        mx.random.seed(seed)
        sampler = make_sampler(temp=temp, top_p=top_p if temp > 0 else 0.0)
        target, kw = model, {}
        if draft_model is not None:
            target = counted["target"] = _DecodeCounter(model, len(prompt))
            counted["draft"] = _DecodeCounter(draft_model, len(prompt))
            kw = dict(draft_model=counted["draft"], num_draft_tokens=num_draft)
        return stream_generate(target, tokenizer, mx.array(prompt), max_tokens=max_tokens, sampler=sampler, **kw)

    nbytes = 0
    if draft_model is not None:
        from mlxspec.runtime.weights import param_bytes

        nbytes = param_bytes(draft_model)
    return Method(name, stream, "mlx-lm", draft_bytes=nbytes, draft_k=num_draft, notes=counted)


def run_once(method: Method, prompt: list[int], prompt_name: str, temp: float, max_tokens: int, seed: int) -> Run:
    mx.reset_peak_memory()
    items, tps = _time_stream(method.stream(prompt, temp, max_tokens, seed))
    tokens = [r.token for r in items]
    run = Run(method.name, prompt_name, temp, tokens, tps, mx.get_peak_memory() / 1e9)
    if method.kind == "mlxspec" and items:
        s = items[-1].stats
        if s.rounds:
            run.drafted, run.accepted, run.rounds = s.drafted, s.accepted, s.rounds
        if "relax_checked" in s.extra:
            x = s.extra
            run.relaxed_tokens, run.relax_checked, run.tv_mean = x["relaxed_tokens"], x["relax_checked"], x["tv_mean"]
        run.host_bytes_per_token = s.host.get("host_bytes_per_token")
        run.host_syncs_per_round = s.host.get("host_syncs_per_round")
        if method.verify == "early-exit":
            from mlxspec.hierarchy.report import counters

            run.early_exit = counters(s.extra)
    elif method.kind == "mlx-lm" and "draft" in method.notes:
        run.drafted, run.rounds = method.notes["draft"].calls, method.notes["target"].calls
        run.accepted = sum(1 for r in items if r.from_draft)
    return run


def _strip_eos(tokens: list[int], eos: set) -> list[int]:
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[:i]
    return tokens


@dataclass
class Row:
    method: str
    temp: float
    tps_mean: float
    tps_sd: float
    speedup: float
    acceptance: Optional[float]
    mean_accepted_length: Optional[float]
    peak_gb: float
    draft_mb: float
    exact: Optional[bool]  # greedy: same tokens as the reference on every prompt; None sampled
    runs: int
    relaxed_tokens: Optional[int] = None  # relaxed rows: tokens that departed from the target
    tv_mean: Optional[float] = None  # relaxed rows: mean TV(p_ens, p) over verified tokens
    early_exit: Optional[dict] = None  # early-exit rows: summed counters, tokens per full pass, stage shares
    host_bytes_per_token: Optional[float] = None  # mlxspec rows: mean device->host bytes per token


def summarize(runs: list[Run], methods: list[Method], baseline: str, reference: str, eos: set) -> list[Row]:
    rows = []
    temps = sorted({r.temp for r in runs})
    for temp in temps:
        base = [r.tps for r in runs if r.method == baseline and r.temp == temp]
        base_tps = statistics.mean(base) if base else float("nan")
        ref = {r.prompt: _strip_eos(r.tokens, eos) for r in runs if r.method == reference and r.temp == temp}
        for m in methods:
            mine = [r for r in runs if r.method == m.name and r.temp == temp]
            if not mine:
                continue
            tps = [r.tps for r in mine]
            drafted = sum(r.drafted or 0 for r in mine)
            rounds = sum(r.rounds or 0 for r in mine)
            accepted = sum(r.accepted or 0 for r in mine)
            exact = all(_strip_eos(r.tokens, eos) == ref.get(r.prompt) for r in mine) if temp == 0 else None
            checked = sum(r.relax_checked or 0 for r in mine)
            relax = {} if m.verify != "relaxed" else dict(
                relaxed_tokens=sum(r.relaxed_tokens or 0 for r in mine),
                tv_mean=sum((r.tv_mean or 0.0) * (r.relax_checked or 0) for r in mine) / checked if checked else 0.0)
            if m.verify == "relaxed":
                exact = None  # not lossless by design: its cost is in the relaxed columns
            rows.append(Row(
                method=m.name, temp=temp,
                tps_mean=statistics.mean(tps), tps_sd=statistics.stdev(tps) if len(tps) > 1 else 0.0,
                speedup=statistics.mean(tps) / base_tps if base_tps else float("nan"),
                acceptance=accepted / drafted if drafted else None,
                mean_accepted_length=(accepted + rounds) / rounds if rounds else None,
                peak_gb=max(r.peak_gb for r in mine), draft_mb=m.draft_bytes / 1e6,
                exact=exact, runs=len(mine), **relax,
            ))
            host = [r.host_bytes_per_token for r in mine if r.host_bytes_per_token is not None]
            rows[-1].host_bytes_per_token = round(statistics.mean(host), 1) if host else None
            if m.verify == "early-exit":
                from mlxspec.hierarchy.report import summed

                rows[-1].early_exit = summed([r.early_exit for r in mine])
    return rows


def format_table(rows: list[Row], baseline: str) -> str:
    head = ["method", "temp", "tok/s", "speedup", "accept", "mean len", "peak GB", "draft MB", "greedy == plain",
            "host B/tok"]
    relaxed = any(r.relaxed_tokens is not None for r in rows)
    if relaxed:
        head += ["relaxed tok", "mean TV"]
    lines = [head]
    for r in rows:
        extra = [] if not relaxed else ["-", "-"] if r.relaxed_tokens is None else [
            str(r.relaxed_tokens), f"{r.tv_mean:.3f}"]
        lines.append([
            r.method, f"{r.temp:g}", f"{r.tps_mean:.2f} ± {r.tps_sd:.2f}", f"{r.speedup:.2f}x",
            f"{r.acceptance:.0%}" if r.acceptance is not None else "-",
            f"{r.mean_accepted_length:.2f}" if r.mean_accepted_length is not None else "-",
            f"{r.peak_gb:.2f}", f"{r.draft_mb:.1f}" if r.draft_mb else "-",
            {True: "yes", False: "NO", None: "n/a"}[r.exact],
            f"{r.host_bytes_per_token:g}" if r.host_bytes_per_token is not None else "-",
        ] + extra)
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(head))]
    out = []
    for j, row in enumerate(lines):
        out.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    out.append(f"speedup is against {baseline}; tok/s is decode speed (mean ± sd over prompts and repetitions); "
               "host B/tok: bytes mlxspec read from the device per token")
    from mlxspec.hierarchy.report import describe

    out += [f"{r.method} (temp {r.temp:g}): {describe(r.early_exit)}" for r in rows if r.early_exit]
    return "\n".join(out)
