"""The generation engine: plain and speculative decoding over one target model.

Token flow (S = every token so far; the target cache holds S[:-1], S[-1] is pending):
  round:  draft = drafter.propose(k)          guesses that continue S
          logits = target.forward([S[-1]] + draft)
          n, nxt = verify(logits, draft)      n drafts kept, nxt from the target
          target.trim(len(draft) - n); drafter.commit_path(draft[:n], nxt); S += draft[:n] + [nxt]
  plain:  logits = target.forward([S[-1]]); nxt = pick(logits); drafter.extend([nxt])
The KV cache survives between calls: a new call reuses the longest common prefix.
"""
from __future__ import annotations

import time
from typing import Iterator, Optional, Sequence

import mlx.core as mx
import numpy as np

from mlxspec.drafters.base import Drafter
from mlxspec.tree import depths, within_depth
from mlxspec.errors import InvalidParameterError
from mlxspec.governor import Governor
from mlxspec.prompting import encode_chat
from mlxspec.response import GenerationResponse, SpecStats
from mlxspec.sampling import SamplingParams, greedy_token, probs_from_logits, sample
from mlxspec.runtime.target import TargetRunner
from mlxspec.text import StopMatcher
from mlxspec.verify import verify_greedy, verify_sampling, verify_tree_greedy

DEFAULT_NUM_DRAFT = 4
MAX_TOKENS_LIMIT = 1_000_000


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Engine:
    def __init__(
        self,
        model,
        tokenizer,
        drafter: Optional[Drafter] = None,
        model_name: str = "model",
        draft_name: str = "none",
        max_context: Optional[int] = None,
        num_draft: int = DEFAULT_NUM_DRAFT,
        adaptive: bool = True,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.drafter = drafter
        self.model_name = model_name
        self.draft_name = draft_name if drafter is not None else "none"
        self.max_context = max_context
        self.num_draft = num_draft
        self.adaptive = adaptive
        self.plain_step_s: Optional[float] = None  # measured this session
        self._governors: dict[tuple, Governor] = {}
        self._runner: Optional[TargetRunner] = None
        self._cached: list[int] = []  # tokens whose KV the target cache holds
        self._drafter_ready = False

    # -- prompts -------------------------------------------------------------------
    @property
    def plain_tps(self) -> Optional[float]:
        return 1.0 / self.plain_step_s if self.plain_step_s else None

    def encode_chat(self, messages: list[dict]) -> list[int]:
        return encode_chat(self.tokenizer, messages)

    def encode_prompt(self, text: str, chat_template: bool = True) -> list[int]:
        if not text or not text.strip():
            raise InvalidParameterError("the prompt is empty")
        if chat_template and getattr(self.tokenizer, "has_chat_template", False):
            return self.encode_chat([{"role": "user", "content": text}])
        return list(self.tokenizer.encode(text))

    # -- state -----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the cached conversation (next call prefills from scratch)."""
        self._runner = None
        self._cached = []
        self._drafter_ready = False

    def _runner_for(self, use_drafter: bool) -> TargetRunner:
        if self._runner is None:
            self._runner = (
                self.drafter.make_target_runner(self.model) if use_drafter else TargetRunner(self.model)
            )
            self._cached = []
        return self._runner

    def _prefill(self, runner: TargetRunner, prompt: list[int]) -> mx.array:
        keep = min(_common_prefix(self._cached, prompt), len(prompt) - 1)
        runner.trim(runner.length - keep)
        self._cached = prompt[:keep]
        logits = runner.prefill(prompt[keep:])
        self._cached = list(prompt)
        return logits

    def _check(self, prompt: list[int], max_tokens: int) -> None:
        if not prompt:
            raise InvalidParameterError("the prompt is empty")
        if not isinstance(max_tokens, int) or max_tokens <= 0:
            raise InvalidParameterError(f"max tokens must be a positive integer, got {max_tokens}")
        if max_tokens > MAX_TOKENS_LIMIT:
            raise InvalidParameterError(f"max tokens {max_tokens} is absurd (limit {MAX_TOKENS_LIMIT})")
        if self.max_context and len(prompt) >= self.max_context:
            raise InvalidParameterError(
                f"the prompt has {len(prompt)} tokens; the model's context is {self.max_context}"
            )

    # -- generation ------------------------------------------------------------------
    def stream(
        self,
        prompt: list[int],
        params: SamplingParams = SamplingParams(),
        max_tokens: int = 256,
        seed: Optional[int] = None,
        num_draft: Optional[int] = None,
        stop: Sequence[str] = (),
        speculative: bool = True,
    ) -> Iterator[GenerationResponse]:
        prompt = [int(t) for t in prompt]
        params = params.validated()
        self._check(prompt, max_tokens)
        k0 = self.num_draft if num_draft is None else num_draft
        if k0 < 0 or k0 > 64:
            raise InvalidParameterError(f"num-draft must be in 0..64, got {k0}")
        use_drafter = speculative and self.drafter is not None and k0 > 0
        if self.max_context:
            max_tokens = min(max_tokens, self.max_context - len(prompt))
        rng = np.random.default_rng(seed)
        stats = SpecStats(method=self.draft_name if use_drafter else "plain")
        gov = self._governor_for(k0, params.greedy)
        gov.new_call()
        eos = set(getattr(self.tokenizer, "eos_token_ids", ()) or ())
        detok = self.tokenizer.detokenizer
        detok.reset()
        stops = StopMatcher(stop)

        if self._runner is not None and use_drafter != self._drafter_ready:
            self.reset()  # the drafter may own the runner; switch cleanly
        runner = self._runner_for(use_drafter)
        self._runner = None  # marked dirty until this call leaves a consistent state
        mx.reset_peak_memory()
        t_start = time.perf_counter()
        logits = self._prefill(runner, prompt)
        seq = list(prompt)
        nxt = self._pick(np.array(logits)[None], seq, params, rng)
        if use_drafter:
            self.drafter.reset(prompt, runner)
            self.drafter.extend([nxt])
        self._drafter_ready = use_drafter
        t_gen = time.perf_counter()
        prompt_tps = len(prompt) / max(t_gen - t_start, 1e-9)
        seq.append(nxt)
        self._runner = runner
        pending: list[tuple[int, bool]] = [(nxt, False)]
        produced = 0

        def respond(token, from_draft, text, finish):
            elapsed = max(time.perf_counter() - t_gen, 1e-9)
            stats.draft_vocab = self.drafter.vocab_size_in_use if use_drafter else None
            stats.fallback = use_drafter and gov.paused
            return GenerationResponse(
                text=text,
                token=token,
                from_draft=from_draft,
                prompt_tokens=len(prompt),
                prompt_tps=prompt_tps,
                generation_tokens=produced,
                generation_tps=produced / elapsed,
                peak_memory=mx.get_peak_memory() / 1e9,
                stats=stats,
                finish_reason=finish,
            )

        while True:
            for token, from_draft in pending:
                produced += 1
                if token in eos:
                    yield respond(token, from_draft, stops.flush(detok), "stop")
                    return
                detok.add_token(token)
                text, hit = stops.feed(detok.last_segment)
                if hit:
                    yield respond(token, from_draft, text, "stop")
                    return
                if produced >= max_tokens:
                    yield respond(token, from_draft, text + stops.flush(detok), "length")
                    return
                yield respond(token, from_draft, text, None)
            room = max_tokens - produced
            if self.max_context:
                room = min(room, self.max_context - len(seq) - 1)
            self._runner = None
            if use_drafter and gov.use_speculation() and room > 1:
                pending = self._round(runner, seq, params, rng, gov, stats, min(gov.k, room - 1), room - 1)
            else:
                pending = self._plain_step(runner, seq, params, rng, gov, stats, use_drafter)
            self._runner = runner
            self._cached = seq[:-1]
            self.plain_step_s = gov.plain_step_s

    def _governor_for(self, k0: int, greedy: bool) -> Governor:
        """One governor per draft length and decoding mode, kept across calls, so what it
        learnt (draft length, whether speculation pays here) carries to the next turn."""
        gov = self._governors.get((k0, greedy))
        if gov is None:
            gov = self._governors[(k0, greedy)] = Governor(
                k0, 2 * k0 + 2, self.plain_step_s, adaptive=self.adaptive,
                shrink=not (self.drafter is not None and self.drafter.sizes_own_drafts))
        elif self.plain_step_s is not None:
            gov.plain_step_s = self.plain_step_s
        return gov

    def _pick(self, logits: np.ndarray, context: list[int], params, rng) -> int:
        if params.greedy:
            return greedy_token(logits[-1], context, params)
        return sample(probs_from_logits(logits[-1], context, params), rng)

    def _plain_step(self, runner, seq, params, rng, gov, stats, use_drafter):
        t0 = time.perf_counter()
        logits = np.array(runner.forward([seq[-1]]))
        nxt = self._pick(logits, seq, params, rng)
        gov.record_plain(time.perf_counter() - t0)
        stats.plain_steps += 1
        seq.append(nxt)
        if use_drafter:
            self.drafter.extend([nxt])
        return [(nxt, False)]

    def _round(self, runner, seq, params, rng, gov, stats, k, room):
        t0 = time.perf_counter()
        draft = self.drafter.propose(k, params, rng)
        # A drafter keeps its own chain within k; copied branches may run longer, but
        # never past what this call may still produce.
        own = len(draft.tokens) if draft.own is None else draft.own
        drafts, parents, own = within_depth(list(draft.tokens), draft.parents, room, own)
        if not drafts:  # the drafter declined: plain step, drafter still informed
            return self._plain_step(runner, seq, params, rng, gov, stats, True)
        if parents is not None:
            return self._tree_round(runner, seq, params, gov, stats, drafts, parents, own, t0)
        logits = np.array(runner.forward([seq[-1]] + drafts))
        if params.greedy:
            n, nxt = verify_greedy(logits, drafts, seq, params)
        else:
            n, nxt = verify_sampling(logits, drafts, draft.probs, seq, params, rng)
        runner.trim(len(drafts) - n)
        gov.record_round(time.perf_counter() - t0, own, min(n, own), produced=n + 1)
        return self._keep(seq, stats, len(drafts), drafts[:n], nxt)

    def _tree_round(self, runner, seq, params, gov, stats, nodes, parents, own, t0):
        """Greedy verification of a draft tree in one target forward."""
        logits = np.array(runner.forward_tree([seq[-1]] + nodes, parents))
        path, nxt = verify_tree_greedy(logits, nodes, parents, seq, params)
        runner.accept_tree([0] + [i + 1 for i in path])
        # The governor sizes the drafter's own guesses (nodes[:own]) by how deep they went
        # and how deep the kept path reached, whichever branch it followed (as in a chain
        # extended by copied tokens): a path as deep as the guesses asks for deeper ones.
        # It judges the rate on every token emitted.
        depth = max(depths(parents[:own]), default=0)
        gov.record_round(time.perf_counter() - t0, depth, min(len(path), depth), produced=len(path) + 1)
        return self._keep(seq, stats, len(nodes), [nodes[i] for i in path], nxt)

    def _keep(self, seq, stats, drafted: int, kept: list[int], nxt: int):
        """After a verified round: the drafter, the stats and the sequence take the kept
        drafts and the target's next token; they are what the caller emits next."""
        self.drafter.commit_path(kept, nxt)
        stats.rounds += 1
        stats.drafted += drafted
        stats.accepted += len(kept)
        seq.extend(kept)
        seq.append(nxt)
        return [(t, True) for t in kept] + [(nxt, False)]
