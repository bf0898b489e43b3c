"""One thread owns the backend (tui/contract.py): every load and generation runs on it,
in order.

The UI never touches MLX. It submits jobs and reads events from a GenerationHandle's
queue; the engine thread never waits for the UI, so a busy screen cannot slow decoding.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Optional

from mlxspec.errors import HeadLoadError, MlxspecError, first_line
from mlxspec.tui.adapting import DEFAULT_IDLE_S, Emit, IdleTrainer
from mlxspec.tui.contract import mismatches


@dataclass
class Chunk:
    """One generated token (what the engine yielded), plus the session's plain speed."""
    response: Any  # mlxspec.response.GenerationResponse
    plain_tps: Optional[float]


@dataclass
class Prefill:
    """Prefill progress of the prompt before the first token."""
    done: int
    total: int
    elapsed: float  # seconds since the reply started

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class Done:
    finish: str  # stop | length | stopped | error
    error: Optional[str] = None


def describe_error(exc: BaseException, what: str = "generation failed") -> str:
    """A one-line message for the user: no traceback."""
    if isinstance(exc, MlxspecError):
        return str(exc)
    text = first_line(exc)
    if isinstance(exc, MemoryError) or "memory" in text.lower():
        return f"out of memory: {text} — try a smaller model or fewer max tokens"
    return f"{what}: {type(exc).__name__}: {text}"


class GenerationHandle:
    def __init__(self):
        self.events: "queue.Queue[Chunk | Done]" = queue.Queue()
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def drain(self, timeout: float = 0.1) -> list:
        """Every event available now (waiting up to `timeout` for the first)."""
        try:
            items = [self.events.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self.events.get_nowait())
            except queue.Empty:
                return items


class EngineThread:
    def __init__(self, loader: Optional[Callable] = None, on_adapt: Optional[Emit] = None):
        self._loader = loader
        self._jobs: "queue.Queue[Optional[tuple]]" = queue.Queue()
        self.engine = None  # the ChatBackend; touched only on the engine thread
        self.idle = IdleTrainer(on_adapt)  # head training between replies, on this thread
        self._thread = threading.Thread(target=self._loop, name="mlxspec-engine", daemon=True)
        self._thread.start()

    # -- thread plumbing ------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            while self.idle.pending and self._jobs.empty():  # any job ends idle training
                self.idle.run_slice(self.engine, lambda: not self._jobs.empty())
            job = self._jobs.get()
            if job is None:
                return
            fn, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # reported to the UI, never kills the thread
                fut.set_exception(exc)

    def submit(self, fn: Callable) -> Future:
        fut: Future = Future()
        self._jobs.put((fn, fut))
        return fut

    def shutdown(self, timeout: float = 2.0) -> None:
        self._jobs.put(None)
        self._thread.join(timeout)

    # -- jobs ------------------------------------------------------------------------
    def load(self, model: Optional[str], draft: str, **options) -> Future:
        """Replace the engine; the future's result is (engine, warnings) or the load error.
        `options` (e.g. adapt) go to the loader; None values are left out (the default)."""
        options = {k: v for k, v in options.items() if v is not None}

        def job():
            loader = self._loader
            if loader is None:
                from mlxspec.tui.backend import load_backend

                loader = load_backend
            self.engine = None  # drop the old models before loading new ones
            self.idle.disarm()
            self.idle.report(None)
            # Warnings (e.g. "draft model unavailable") must not print over the screen.
            capture = _ListHandler()
            log = logging.getLogger("mlxspec")
            log.addHandler(capture)
            try:
                try:
                    engine = loader(model, draft, **options)
                except HeadLoadError as exc:
                    if draft != "head":
                        raise
                    # No usable head: chat with the best other drafter rather than no model.
                    capture.messages.append(f"{first_line(exc)} — using the auto drafter instead")
                    engine = loader(model, "auto", **options)
            finally:
                log.removeHandler(capture)
            problems = mismatches(engine)
            if problems:
                raise TypeError(f"the loader's backend does not fit the chat: {'; '.join(problems)}")
            self.engine = engine
            self.idle.report(engine)
            return engine, capture.messages

        return self.submit(job)

    def generate(self, messages: list[dict], *, temp: float, top_p: float, max_tokens: int,
                 seed: Optional[int] = None, idle_s: float = DEFAULT_IDLE_S) -> GenerationHandle:
        """Stream a reply; then, when the head adapts, train it for up to `idle_s` seconds
        until the next job arrives."""
        handle = GenerationHandle()

        def job():
            self._generate(handle, messages, temp, top_p, max_tokens, seed)
            if self.engine is not None:
                self.idle.arm(self.engine, idle_s)

        self.submit(job)
        return handle

    def _generate(self, handle, messages, temp, top_p, max_tokens, seed) -> None:
        backend = self.engine
        if backend is None:
            handle.events.put(Done("error", "no model is loaded — pick one in Options (ctrl+o)"))
            return
        if handle.cancelled:
            handle.events.put(Done("stopped"))
            return
        gen = None
        finish = "stop"
        t0 = time.perf_counter()

        def on_prefill(done: int, total: int) -> None:
            if handle.cancelled:
                raise _Stopped  # esc during a long prefill: do not wait for its end
            handle.events.put(Prefill(done, total, time.perf_counter() - t0))

        try:
            gen = backend.stream_chat(messages, temp=temp, top_p=top_p, max_tokens=max_tokens,
                                     seed=seed, on_prefill=on_prefill)
            for r in gen:
                handle.events.put(Chunk(r, backend.plain_tps))
                if r.finish_reason:
                    finish = r.finish_reason
                if handle.cancelled:
                    finish = "stopped"
                    break
        except _Stopped:
            handle.events.put(Done("stopped"))
            _reset_quietly(backend)
            return
        except BaseException as exc:
            handle.events.put(Done("error", describe_error(exc)))
            _reset_quietly(backend)
            return
        finally:
            if gen is not None:
                gen.close()  # stops cleanly; the engine keeps a consistent cache
        handle.events.put(Done(finish))


class _Stopped(Exception):
    pass


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record) -> None:
        self.messages.append(record.getMessage())


def _reset_quietly(backend) -> None:
    # After a failure mid-step the cache may be half-written: start the next turn clean.
    try:
        backend.reset()
    except Exception:
        pass
