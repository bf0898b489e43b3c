"""The generation engine: plain and speculative decoding over one target model, as a
stream of token events (response.py turns them into text and stats).

One round loop (S = every token so far; the target's cache holds S[:-1]):
    k = governor.plan()                      depth cap of the draft; 0: a plain step
    tree = drafter.propose(k)                a chain is the tree with parents -1, 0, 1, ...
    logits = runner.verify(S[-1], tree)      one batched forward over every node
    path, nxt = verify(logits, tree, S)      greedy, or exact rejection sampling
    runner.keep(tree, path); drafter.accept(kept, nxt); S += kept + [nxt]
The KV cache survives between calls: a new call reuses the longest common prefix.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import mlx.core as mx
import numpy as np

from mlxspec import costs, relaxed, steps
from mlxspec.call_checks import MAX_NUM_DRAFT, MAX_TOKENS_LIMIT, check_call  # noqa: F401 (the CLI's limits)
from mlxspec.drafters.base import Drafter
from mlxspec.errors import InvalidParameterError
from mlxspec.governor import Governor, first_draft_cost
from mlxspec.prompting import encode_chat
from mlxspec.runtime import host
from mlxspec.runtime.target import TargetRunner
from mlxspec.sampling import SamplingParams
from mlxspec.tree import DEFAULT_TREE_NODES

DEFAULT_NUM_DRAFT = 4
VERIFY_MODES = ("exact", "relaxed", "early-exit")  # exact is lossless; see docs for the others


@dataclass
class TokenEvent:
    token: int
    from_draft: bool  # a drafted token the target kept
    round: int  # index of the verification round that emitted it; -1: a plain step
    drafted: int = 0  # on a round's first token: the nodes the round verified
    last: bool = False  # the call's last token (its max tokens or the context's end)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _format_key(model) -> str:
    """Backend and weight format: what the cost of a forward depends on."""
    layer = model.layers[0] if hasattr(model, "layers") else None
    proj = getattr(getattr(layer, "self_attn", None), "q_proj", None)
    fmt = f"q{proj.bits}" if hasattr(proj, "bits") else str(getattr(getattr(proj, "weight", None), "dtype", "?"))
    pipe = getattr(model, "mlxspec_pipeline", None)  # split over ranks: a forward goes round the ring
    return f"{mx.default_device()}|{fmt}" + (f"|ranks{pipe.size}" if pipe is not None else "")


class Engine:
    host_rows = False  # True: the old full-row copy of every logits row (steps.py; a control)

    def __init__(
        self,
        model,
        tokenizer,
        drafter: Optional[Drafter] = None,
        model_name: str = "model",
        draft_name: Optional[str] = None,
        max_context: Optional[int] = None,
        num_draft: int = DEFAULT_NUM_DRAFT,
        adaptive: bool = True,
        cost_path: Optional[Path] = None,
        verify: str = "exact",
        relax_weight: Optional[float] = None,
        relax_budget: Optional[float] = None,
    ):
        if verify not in VERIFY_MODES:
            raise InvalidParameterError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {verify!r}")
        if verify != "relaxed" and (relax_weight is not None or relax_budget is not None):
            raise InvalidParameterError("relax weight and budget need verify='relaxed' (--verify relaxed)")
        self.model = model
        self.tokenizer = tokenizer
        self.drafter = drafter
        self.model_name = model_name
        self.draft_name = (draft_name or drafter.name) if drafter is not None else "none"
        self.max_context = max_context
        self.num_draft = num_draft
        self.adaptive = adaptive
        self.cost_path = cost_path
        self.cost: Optional[costs.CostModel] = None
        self.tree_nodes: Optional[int] = None  # draft nodes per round, from the measured costs
        self.plain_step_s: Optional[float] = None  # measured this session
        self._governors: dict[tuple, Governor] = {}
        self.runner = self._new_runner()
        self._cached: list[int] = []  # tokens whose KV the runner's cache holds
        self.method = "plain"  # what the current reply uses
        self.prefill_stats = (0, 0.0)  # (tokens, seconds) of the current reply's prefill
        self.governor: Optional[Governor] = None
        self.verify_mode = verify
        self.relax = relaxed.Relaxed.checked(relax_weight, relax_budget) if verify == "relaxed" else None
        if self.relax is not None:
            relaxed.request_draft_rows(drafter)
        # counters of the current reply that the verification mode reports (SpecStats.extra)
        self.verify_stats: dict = {}
        self._traffic = self._decode_traffic = None  # host.snapshot()s of the current reply
        self._steps = 0  # decode steps (rounds and plain steps) of the current reply

    def _new_runner(self) -> TargetRunner:
        return self.drafter.make_runner(self.model) if self.drafter else TargetRunner(self.model)

    # -- prompts -------------------------------------------------------------------
    @property
    def plain_tps(self) -> Optional[float]:
        return 1.0 / self.plain_step_s if self.plain_step_s else None

    def encode_chat(self, messages: list[dict]) -> list[int]:
        return encode_chat(self.tokenizer, messages)

    def encode_prompt(self, text: str, chat_template: bool = True) -> list[int]:
        if not isinstance(text, str) or not text.strip():
            raise InvalidParameterError("the prompt is empty")
        if chat_template and getattr(self.tokenizer, "has_chat_template", False):
            return self.encode_chat([{"role": "user", "content": text}])
        return list(self.tokenizer.encode(text))

    def reset(self) -> None:
        """Forget the cached conversation (the next call prefills from scratch)."""
        self.runner = self._new_runner()
        self._cached = []

    @property
    def speculation_paused(self) -> bool:
        return self.governor is not None and self.method != "plain" and self.governor.paused

    # -- generation ------------------------------------------------------------------
    def stream(self, prompt, params: SamplingParams = SamplingParams(), max_tokens: int = 256,
               seed: Optional[int] = None, num_draft: Optional[int] = None, stop: Sequence[str] = (),
               speculative: bool = True, on_prefill: Optional[Callable[[int, int], None]] = None):
        """GenerationResponses (text, stats) for the token events of tokens()."""
        from mlxspec.response import responses

        events = self.tokens(prompt, params, max_tokens, seed, num_draft, speculative, on_prefill)
        return responses(self, events, stop)

    def tokens(self, prompt, params: SamplingParams = SamplingParams(), max_tokens: int = 256,
               seed: Optional[int] = None, num_draft: Optional[int] = None, speculative: bool = True,
               on_prefill: Optional[Callable[[int, int], None]] = None) -> Iterator[TokenEvent]:
        """Token events of one reply, at most max_tokens (fewer at the context's end)."""
        prompt, params, k0 = check_call(prompt, params, max_tokens, self.num_draft if num_draft is None else num_draft,
                                        getattr(getattr(self.model, "args", None), "vocab_size", None),
                                        self.max_context)
        return self._tokens(prompt, params, max_tokens, seed, k0, speculative, on_prefill)

    def _tokens(self, prompt, params, max_tokens, seed, k0, speculative, on_prefill):
        use_drafter = speculative and self.drafter is not None and k0 > 0
        self.method = self.draft_name if use_drafter else "plain"
        self.verify_stats = {}
        if self.max_context:
            max_tokens = min(max_tokens, self.max_context - len(prompt))
        rng = np.random.default_rng(seed)
        mx.reset_peak_memory()
        self._traffic = host.snapshot()
        self._decode_traffic, self._steps = None, 0
        t0 = time.perf_counter()
        if use_drafter and self.verify_mode == "early-exit":
            from mlxspec.hierarchy import prepare

            prepare(self)  # the trained exit hears the prompt too
        logits = self._prefill(prompt, on_prefill)
        seq = list(prompt)
        self.prefill_stats = (len(prompt), 0.0)
        if not use_drafter and self._can_pipeline():
            yield from self._pipelined(logits, seq, params, rng, max_tokens, t0)
            return
        nxt = steps.first_token(self, logits, seq, params, rng)
        seq.append(nxt)
        self.prefill_stats = (len(prompt), time.perf_counter() - t0)
        self._decode_traffic = host.snapshot()
        gov = self._governor_for(k0, params.greedy) if use_drafter else None
        self.governor = gov
        if use_drafter:
            self._ensure_costs(gov, prompt)  # once per model here; not prefill time
            hint = getattr(self.drafter, "acceptance_hint", None)
            a = hint() if hint is not None and self.adaptive else None
            if a is not None:
                gov.hint(a)
            self.drafter.reset(list(seq), self.runner)
        yield TokenEvent(nxt, False, -1, last=max_tokens == 1)
        produced, rounds = 1, 0
        while produced < max_tokens:
            room = max_tokens - produced
            if self.max_context:
                room = min(room, self.max_context - len(seq))
            self._room = room  # early-exit rounds gather up to this many tokens
            try:
                k = gov.plan() if gov is not None and room > 1 else 0
                free = steps.copies_alone(self, gov, k, room, params, rng)
                tree, t_draft = steps.draft(self, gov.max_k if free else k, room, seq, params, rng, free) \
                    if k or free else (None, 0.0)
                if tree is not None and (not gov.worth_verifying(len(tree), tree.depth, free)):
                    tree = None
                if tree is None:
                    out = steps.plain_step(self, seq, params, rng, gov)
                else:
                    out = steps.verify_round(self, seq, params, rng, gov, tree, t_draft, free)
            except BaseException:
                self.reset()  # a half-done step: the caches no longer describe seq
                raise
            self._cached = seq[:-1]
            self._steps += 1
            for i, tok in enumerate(out):
                r = -1 if tree is None else rounds
                yield TokenEvent(tok, tree is not None and i < len(out) - 1, r,
                                 len(tree) if tree is not None and i == 0 else 0,
                                 last=produced + i + 1 >= max_tokens)
            rounds += tree is not None
            produced += len(out)

    def _can_pipeline(self) -> bool:
        """Plain steps overlap (steps.pipelined) on a runner whose forward takes a token
        still on the device: the plain runner's."""
        return not self.host_rows and type(self.runner).forward is TargetRunner.forward

    def _pipelined(self, logits, seq, params, rng, max_tokens, t0):
        gen = steps.pipelined(self, logits, seq, params, rng, max_tokens, t0)
        for i in range(max_tokens):
            try:
                tok = next(gen)
            except BaseException:
                self.reset()  # a half-done step: the caches no longer describe seq
                raise
            if i == 0:
                self._decode_traffic = host.snapshot()
            self._steps += i > 0
            self._cached = seq[:-1]  # the runner may hold one more (the next step, built)
            yield TokenEvent(tok, False, -1, last=i + 1 >= max_tokens)

    def host_traffic(self) -> dict:
        """The current reply's device->host traffic (runtime/host.py): syncs and bytes
        since it started, and syncs per decode step (a round or a plain step)."""
        start = getattr(self, "_traffic", None)
        if start is None:
            return {}
        now = host.snapshot()
        total = now.since(start)
        decode = now.since(self._decode_traffic) if self._decode_traffic is not None else None
        out = {"host_syncs": total.syncs, "host_bytes": total.bytes}
        if decode is not None and self._steps:
            out["host_syncs_per_round"] = round(decode.syncs / self._steps, 3)
        return out

    def _prefill(self, prompt: list[int], on_prefill) -> mx.array:
        keep = min(_common_prefix(self._cached, prompt), len(prompt) - 1)
        self.runner.trim(self.runner.length - keep)
        self._cached = prompt[:keep]
        try:
            logits = self.runner.prefill(prompt[keep:], progress=on_prefill)
        except BaseException:
            self.reset()
            raise
        self._cached = list(prompt)
        return logits

    def _ensure_costs(self, gov: Governor, prompt: list[int]) -> None:
        """The cost model of this target here: cached, or measured once now (on a runner
        of its own over the prompt's tail, so the reply's caches are left as they are)."""
        if not self.adaptive:
            return
        if self.cost is None:
            key = _format_key(self.model)
            mem_key = f"{id(self.model)}|{key}"
            self.cost = costs.cached(mem_key, None) or costs.cached(key, self.cost_path)
            if self.cost is None:
                probe = TargetRunner(self.model)
                probe.prefill(prompt[-32:])
                self.cost, one = costs.measure(probe, prompt[-1])
                self.plain_step_s = self.plain_step_s or one
                costs.remember(key, self.cost, self.cost_path)
            costs.remember(mem_key, self.cost, None)
        paid = self.cost.effective() if self.pads else self.cost
        self.tree_nodes = paid.tree_budget(DEFAULT_TREE_NODES)
        gov.set_costs(paid, self.plain_step_s)

    @property
    def pads(self) -> bool:
        """Whether verification forwards run at the measured cheapest size (padded)."""
        return self.cost is not None and self.runner.can_pad

    def verify_rows(self, n: int, held: int) -> int:
        """Rows to run for a verification forward of n after `held` tokens
        (costs.padded_size), never past the model's context."""
        rows = self.cost.padded_size(n) if self.pads else n
        return n if self.max_context and held + rows > self.max_context else rows

    def _governor_for(self, k0: int, greedy: bool) -> Governor:
        """One governor per draft length and decoding mode, kept across calls, so what it
        learnt (acceptance, costs, whether speculation pays here) carries to the next turn."""
        gov = self._governors.get((k0, greedy))
        if gov is None:
            max_k = 2 * k0 + 2 if self.adaptive else k0
            d = first_draft_cost(self._governors.values(), self.drafter, self.model)
            gov = self._governors[(k0, greedy)] = Governor(max_k, self.cost, self.plain_step_s,
                                                           adaptive=self.adaptive, draft_cost=d)
        gov.new_call()
        return gov
