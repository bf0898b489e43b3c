"""What a reply streams: one GenerationResponse per emitted token, with running stats.

responses() is the layer between the engine's token events and text: detokenising,
stop strings, end-of-sequence tokens, and statistics of exactly what was emitted (a
drafted run cut by an end token counts only the tokens before the cut).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional, Sequence

from mlxspec.text import StopMatcher


@dataclass
class SpecStats:
    method: str = "plain"  # drafter name, or "plain"
    rounds: int = 0  # verification forwards of the target that emitted tokens
    drafted: int = 0  # draft tokens verified in those rounds
    accepted: int = 0  # drafted tokens emitted
    plain_steps: int = 0  # single-token target forwards (no drafts)
    draft_vocab: Optional[int] = None  # drafter's current vocabulary size (pruned heads)
    fallback: bool = False  # speculation currently paused because it was measured to lose
    verify: str = "exact"  # the verification mode (Engine.verify_mode)
    extra: dict = field(default_factory=dict)  # the mode's own counters (Engine.verify_stats)
    # device->host traffic of the reply (runtime/host.py): host_syncs, host_bytes,
    # host_syncs_per_round (per decode step: a round or a plain step), host_bytes_per_token
    host: dict = field(default_factory=dict)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens emitted per verification round (accepted drafts + the target's token)."""
        return (self.accepted + self.rounds) / self.rounds if self.rounds else 0.0

    @property
    def speculative(self) -> bool:
        return self.rounds > 0

    def as_dict(self) -> dict:
        return {
            "method": self.method,
            "rounds": self.rounds,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "plain_steps": self.plain_steps,
            "acceptance_rate": round(self.acceptance_rate, 4),
            "mean_accepted_length": round(self.mean_accepted_length, 3),
            "draft_vocab": self.draft_vocab,
            "fallback": self.fallback,
            "verify": self.verify,
            **self.extra,
            **self.host,
        }


@dataclass
class GenerationResponse:
    text: str  # new text since the previous response (may be empty)
    token: int
    from_draft: bool  # proposed by the drafter and accepted by the target
    prompt_tokens: int
    prompt_tps: float
    generation_tokens: int
    generation_tps: float
    peak_memory: float  # GB
    stats: SpecStats = field(default_factory=SpecStats)
    finish_reason: Optional[str] = None  # "stop" (EOS / stop string), "length"


def _traffic(engine, produced: int) -> dict:
    counts = getattr(engine, "host_traffic", None)
    out = counts() if callable(counts) else {}
    if out and produced:
        out["host_bytes_per_token"] = round(out["host_bytes"] / produced, 1)
    return out


def responses(engine, events: Iterable, stop: Sequence[str] = ()) -> Iterator[GenerationResponse]:
    """GenerationResponses for an engine's token events (Engine.tokens)."""
    import mlx.core as mx

    tokenizer = engine.tokenizer
    eos = set(getattr(tokenizer, "eos_token_ids", ()) or ())
    detok = tokenizer.detokenizer
    detok.reset()
    stops = StopMatcher(stop)
    stats = SpecStats()
    events = iter(events)
    produced, last_round = 0, -1
    t_gen = prompt_tps = None
    ended = False  # the reply reached its end (not cancelled): the drafter may learn from it
    drafter = getattr(engine, "drafter", None)
    pipe = getattr(engine.model, "mlxspec_pipeline", None)
    mark = pipe.mark() if pipe is not None else None

    def respond(ev, text, finish=None):
        elapsed = max(time.perf_counter() - t_gen, 1e-9)
        return GenerationResponse(
            text=text, token=ev.token, from_draft=ev.from_draft, prompt_tokens=engine.prefill_stats[0],
            prompt_tps=prompt_tps, generation_tokens=produced, generation_tps=produced / elapsed,
            peak_memory=mx.get_peak_memory() / 1e9, stats=stats, finish_reason=finish)

    try:
        for ev in events:
            if t_gen is None:  # the first event comes after the prefill
                n, secs = engine.prefill_stats
                prompt_tps = n / max(secs, 1e-9)
                t_gen = time.perf_counter()
                stats.method = engine.method
                stats.verify = engine.verify_mode
            produced += 1
            if ev.round < 0:
                stats.plain_steps += produced > 1  # the first token comes from the prefill
            elif ev.round != last_round:
                last_round = ev.round
                stats.rounds += 1
                stats.drafted += ev.drafted
            stats.accepted += ev.from_draft
            stats.draft_vocab = drafter.vocab_size_in_use if drafter is not None and stats.method != "plain" else None
            stats.fallback = engine.speculation_paused
            stats.extra = dict(engine.verify_stats)
            if pipe is not None:  # a target split over distributed ranks
                stats.extra["distributed"] = pipe.since(mark)
            stats.host = _traffic(engine, produced)

            if ev.token in eos:
                ended = True
                yield respond(ev, stops.flush(detok), "stop")
                return
            detok.add_token(ev.token)
            text, hit = stops.feed(detok.last_segment)
            if hit:
                ended = True
                yield respond(ev, text, "stop")
                return
            if ev.last:  # the engine's limit: max tokens or the context's end
                ended = True
                yield respond(ev, text + stops.flush(detok), "length")
                return
            yield respond(ev, text, None)
    finally:
        close = getattr(events, "close", None)
        if close:
            close()
        end_reply = getattr(drafter, "end_reply", None)
        if ended and end_reply is not None and stats.method != "plain":
            end_reply(stats, engine.prefill_stats[1] + time.perf_counter() - t_gen)
        if ended and getattr(engine, "verify_mode", None) == "early-exit":
            from mlxspec.hierarchy import reply_ended

            reply_ended(engine)  # the trained exit learns from this reply
