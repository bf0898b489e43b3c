"""A fake ChatBackend (tui/contract.py): canned replies, no MLX, deterministic."""
from __future__ import annotations

import threading
import time
from typing import Optional

from mlxspec.errors import HeadLoadError, ModelNotFoundError
from mlxspec.response import GenerationResponse, SpecStats

DEFAULT_REPLY = (
    "Hello! Here is some **Markdown** and code:\n\n"
    "```python\ndef add(a, b):\n    return a + b\n```\n\n"
    "That is all."
)


class FakeEngine:
    """Streams `reply` word by word; every 3rd piece comes from the target, the rest from
    the draft (with draft "none" all from the target, nothing speculated). Prompts
    containing 'explode' fail mid-reply, 'oom' fails with MemoryError. `prefill` = the
    (done, total) progress calls made before the first token."""

    def __init__(self, model_name="fake-model", draft_name="draft:fake-draft", reply=DEFAULT_REPLY,
                 delay=0.002, plain_tps=20.0):
        self.model_name, self.draft_name = model_name, draft_name
        self.reply, self.delay = reply, delay
        self.plain_tps = plain_tps
        self.calls: list[dict] = []  # every stream() call: prompt tokens, reused prefix
        self._cached: list[int] = []
        self.threads: set[str] = set()  # which threads touched the engine
        self.closed = 0
        self.gate: Optional[threading.Event] = None  # when set: wait on it before each token
        self.hold_after = 0  # ...from this token on (earlier ones stream freely)
        self.prefill: list[tuple[int, int]] = []
        self.prefill_gate: Optional[threading.Event] = None  # wait on it after each prefill call
        # A head that adapts (learns=True): idle_update sleeps step_s per optimiser step,
        # checking stop() before each one unless honour_stop is False (a control).
        self.learns, self.adapt_on, self.step_s, self.honour_stop = False, True, 0.02, True
        self.acceptance: list[float] = []
        self.idle_steps: list[tuple[float, float]] = []  # (start, end) of each idle step
        self.idle_calls: list[tuple[str, float]] = []  # (thread, budget_s)

    # -- the contract ------------------------------------------------------------------
    def stream_chat(self, messages, *, temp, top_p, max_tokens, seed=None, on_prefill=None):
        tokens = self._encode(messages)
        for done, total in self.prefill:  # like the engine: during the first next()
            if on_prefill is not None:
                on_prefill(done, total)
            if self.prefill_gate is not None:
                self.prefill_gate.wait(10)
        yield from self._stream(tokens, temp, top_p, max_tokens)

    def reset(self):
        self._cached = []

    def adaptation(self):
        if not (self.learns and self.adapt_on and self.draft_name != "none"):
            return None
        return {"acceptance": list(self.acceptance), "updates": len(self.idle_calls),
                "steps": len(self.idle_steps)}

    def idle_update(self, stop, budget_s):
        self.idle_calls.append((threading.current_thread().name, budget_s))
        t0, steps = time.perf_counter(), 0
        while self.adaptation() is not None and time.perf_counter() - t0 + self.step_s <= budget_s:
            if self.honour_stop and stop():
                break
            start = time.perf_counter()
            time.sleep(self.step_s)
            self.idle_steps.append((start, time.perf_counter()))
            steps += 1
        return {"steps": steps, "seconds": time.perf_counter() - t0}

    # -- internals -----------------------------------------------------------------------
    def _encode(self, messages):
        self.threads.add(threading.current_thread().name)
        text = "".join(f"<{m['role']}>{m['content']}</s>" for m in messages) + "<assistant>"
        return [ord(c) for c in text]

    def pieces(self):
        words = self.reply.split(" ")
        return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]

    def _stream(self, tokens, temp, top_p, max_tokens):
        self.threads.add(threading.current_thread().name)
        reuse = 0
        while reuse < min(len(tokens), len(self._cached)) and tokens[reuse] == self._cached[reuse]:
            reuse += 1
        self.calls.append({"tokens": list(tokens), "reused": reuse, "temp": temp,
                           "top_p": top_p, "max_tokens": max_tokens})
        self._cached = list(tokens)
        text = "".join(chr(t) for t in tokens).rsplit("<user>", 1)[-1]  # the new turn only
        plain = self.draft_name == "none"
        stats = SpecStats(method="plain") if plain else SpecStats(method=self.draft_name, draft_vocab=49152)
        pieces = self.pieces()[:max_tokens]
        try:
            for i, piece in enumerate(pieces):
                if self.gate is not None and i >= self.hold_after:
                    self.gate.wait(10)
                if self.delay:
                    time.sleep(self.delay)
                if "explode" in text and i == 3:
                    raise RuntimeError("kernel exploded")
                if "oom" in text and i == 2:
                    raise MemoryError("could not allocate 9 GB")
                from_draft = i % 3 != 2 and not plain
                if plain:
                    stats.plain_steps += 1
                elif from_draft:
                    stats.drafted += 1
                    stats.accepted += 1
                else:
                    stats.rounds += 1
                    stats.drafted += 1  # one rejected draft per round
                last = i == len(pieces) - 1
                finish = None if not last else ("stop" if len(pieces) == len(self.pieces()) else "length")
                self._cached.extend([ord(c) for c in piece])
                if last:
                    self.acceptance.append(stats.accepted / max(1, stats.drafted))
                yield GenerationResponse(
                    text=piece, token=i, from_draft=from_draft, prompt_tokens=len(tokens),
                    prompt_tps=1000.0, generation_tokens=i + 1, generation_tps=42.0,
                    peak_memory=0.5, stats=stats, finish_reason=finish)
        finally:
            self.closed += 1


def fake_loader(engine: Optional[FakeEngine] = None, fail_models=("missing",), heads=True):
    """A stand-in for the backend loader that records where it ran and what it was asked
    (drafts, options); heads=False: the model has no trained draft head."""
    made = {"engine": engine, "drafts": [], "options": []}

    def load(model, draft="auto", **options):
        made["drafts"].append(draft)
        made["options"].append(options)
        if model in fail_models:
            raise ModelNotFoundError(f"unknown model '{model}'; try: mlxspec models pull NAME")
        if draft == "head" and not heads:
            raise HeadLoadError(f"no draft head trained for '{model}'; run: mlxspec train-head -m {model}")
        eng = made["engine"] or FakeEngine()
        if model:
            eng.model_name = model
        own = made.setdefault("own_draft", eng.draft_name)
        eng.draft_name = "none" if draft == "none" else own
        eng.adapt_on = options.get("adapt", True) is not False
        eng.threads.add(threading.current_thread().name)
        made["last"] = eng
        return eng

    load.made = made
    return load
