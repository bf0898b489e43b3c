"""One thread owns the engine (it is not thread-safe): it loads it, runs one generation at
a time from a bounded FIFO queue, and trains an adapting head while nothing waits.

A request becomes a Job: the handler puts it on the queue (QueueFull when the queue holds
`max_queue` waiting jobs: the server answers 503) and reads its events on the event loop.
Cancelling a job (its client went away) takes it off the queue, or stops its generation
within a token (between tokens, or at the next prefill chunk). A failure fails that job
only: the engine's cache is reset and the thread carries on."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Optional

from mlxspec.adapt.idle import DEFAULT_IDLE_S, IdleTrainer, Learning, learner
from mlxspec.errors import first_line
from mlxspec.serve.errors import APIError, from_exception
from mlxspec.serve.params import Plan
from mlxspec.serve.usage import usage

log = logging.getLogger("mlxspec.serve")


# -- what a job reports, in order: Token* then one Finished or Failed -------------------
@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class Finished:
    finish_reason: str  # stop | length | cancelled
    usage: dict
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    error: APIError


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__("the queue is full")
        self.retry_after = retry_after


class _Cancelled(Exception):
    pass


def _shutting_down() -> Failed:
    return Failed(APIError(503, "the server is shutting down; retry on its next start",
                           code="server_shutting_down"))


class Job:
    """One request's generation. Made on the event loop; its events arrive there."""

    def __init__(self, plan: Plan, loop: Optional[asyncio.AbstractEventLoop] = None):
        self.plan = plan
        self.loop = loop or asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self._cancel = threading.Event()
        self.queued_at = time.perf_counter()
        self.started_at: Optional[float] = None

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def post(self, event) -> None:
        """From the worker thread: hand an event to the job's event loop."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is gone (shutting down): nobody is listening
            self.cancel()


class JobQueue:
    """Bounded FIFO of waiting jobs; a cancelled job leaves it at once."""

    def __init__(self, max_waiting: int):
        self.max_waiting = max_waiting
        self._jobs: deque = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, job: Job, retry_after: int = 1) -> None:
        with self._cond:
            if self._closed or len(self._jobs) >= self.max_waiting:
                raise QueueFull(retry_after)
            self._jobs.append(job)
            self._cond.notify()

    def get(self) -> Optional[Job]:
        """The next job (blocking); None once closed."""
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            return self._jobs.popleft() if self._jobs else None

    def discard(self, job: Job) -> None:
        with self._cond:
            try:
                self._jobs.remove(job)
            except ValueError:
                pass

    def close(self, on_drop: Optional[Callable[[Job], None]] = None) -> None:
        """No more jobs: the waiting ones are cancelled (and handed to on_drop)."""
        with self._cond:
            self._closed = True
            for job in self._jobs:
                job.cancel()
                if on_drop is not None:
                    on_drop(job)
            self._jobs.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._jobs)


class EngineWorker:
    """Owns the engine on its own thread. `loader()` runs there first and returns the engine."""

    def __init__(self, loader: Callable[[], Any], max_queue: int = 8, idle_s: float = DEFAULT_IDLE_S,
                 on_adapt: Optional[Callable[[dict], None]] = None):
        self.queue = JobQueue(max_queue)
        self.idle_s = float(idle_s)
        self.on_adapt = on_adapt or (lambda out: None)
        self.engine = None
        self.current: Optional[Job] = None
        self.ready: Future = Future()
        self._loader = loader
        self._stopping = threading.Event()
        self._job_s = 1.0  # moving mean of a job's seconds, for Retry-After
        self._idle = IdleTrainer()
        self._thread = threading.Thread(target=self._main, name="mlxspec-serve-engine", daemon=True)
        self._thread.start()

    # -- the engine thread ----------------------------------------------------------------
    def _main(self) -> None:
        try:
            engine = self._loader()
            d = learner(engine)
            if d is not None:
                d.budget_fraction = 0.0  # the head trains between requests (idle), never before a waiting one
            self.engine = engine
            self.ready.set_result(engine)
        except BaseException as exc:
            self.ready.set_exception(exc)
            return
        while not self._stopping.is_set():
            while self._idle.pending and not len(self.queue) and not self._stopping.is_set():
                out = self._idle.run_slice(Learning(self.engine), self._busy)
                if out["steps"]:
                    self.on_adapt(out)
            job = self.queue.get()
            if job is None:
                return
            if job.cancelled:
                continue
            self.current = job
            try:
                self._run(job)
            finally:
                self.current = None
            self._idle.arm(Learning(self.engine), self.idle_s)

    def _busy(self) -> bool:
        return bool(len(self.queue)) or self._stopping.is_set()

    def _run(self, job: Job) -> None:
        plan, engine = job.plan, self.engine
        job.started_at = t0 = time.perf_counter()
        prefilled: list = [None]

        def on_prefill(done: int, total: int) -> None:
            prefilled[0] = total  # the tokens this call prefills: the prompt less the cached prefix
            if job.cancelled:
                raise _Cancelled

        gen, last, n, ttft = None, None, 0, None
        try:
            gen = engine.stream(plan.tokens, plan.params, max_tokens=plan.max_tokens, seed=plan.seed,
                                num_draft=plan.num_draft, stop=plan.stop, speculative=plan.speculative,
                                on_prefill=on_prefill)
            for r in gen:
                if ttft is None:
                    ttft = time.perf_counter() - t0
                last, n = r, n + 1
                if r.text:
                    job.post(Token(r.text))
                if job.cancelled:
                    break
        except _Cancelled:
            pass
        except BaseException as exc:
            err = from_exception(exc)
            if err.status >= 500:
                log.error("error: generation failed: %s", err.message)
            job.post(Failed(err))
            self._reset_quietly()
            return
        finally:
            if gen is not None:
                gen.close()  # stops cleanly; the engine keeps a consistent cache
            self._job_s = 0.8 * self._job_s + 0.2 * (time.perf_counter() - t0)
        finish = last.finish_reason if last is not None and last.finish_reason else "cancelled"
        if job.cancelled:
            if self._stopping.is_set():  # cut short by the server stopping: its client gets a 503
                job.post(_shutting_down())
                return
            finish = "cancelled"
        job.post(Finished(finish, usage(plan, last, n, prefilled[0], ttft, t0 - job.queued_at), n))

    def _reset_quietly(self) -> None:
        try:
            self.engine.reset()  # a failure mid-step may leave the cache half-written
        except Exception as exc:
            log.warning("engine reset failed: %s", first_line(exc))

    # -- from the event loop ------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue `job`, or raise QueueFull (with a Retry-After estimate in seconds)."""
        waiting = len(self.queue) + (self.current is not None)
        self.queue.put(job, retry_after=max(1, min(60, round(self._job_s * (waiting + 1)))))

    def cancel(self, job: Job) -> None:
        job.cancel()
        self.queue.discard(job)

    @property
    def busy(self) -> bool:
        return self.current is not None

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def shutdown(self) -> None:
        """The server is stopping (called from its signal handler: quick, no waiting): the
        waiting jobs and the running one (within a token) end, each answered 503; idle
        training stops before its next step."""
        self._stopping.set()
        self.queue.close(lambda job: job.post(_shutting_down()))
        job = self.current
        if job is not None:
            job.cancel()

    def stop(self, timeout: float = 5.0) -> None:
        """shutdown(), then wait for the thread to end."""
        self.shutdown()
        self._thread.join(timeout)
