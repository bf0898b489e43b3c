"""From a job's events to an answer, on the event loop, watching the client: a client
that goes away while its job waits or runs cancels it (the worker stops within a token).

Both kinds of answer wait for the job's first event before answering, so that a failure
before the first token (a model error) is a proper HTTP error, not a 200 stream holding
an error."""
from __future__ import annotations

import asyncio
import time

from starlette.requests import Request

from mlxspec.serve.worker import EngineWorker, Failed, Finished, Job, Token

POLL_S = 0.1  # how often a waiting answer checks that its client is still there


class ClientGone(Exception):
    pass


class Relay:
    """A job's events, for the handler that answers its client."""

    def __init__(self, job: Job, request: Request, worker: EngineWorker):
        self.job, self.request, self.worker = job, request, worker
        self._checked = time.monotonic()

    async def next(self):
        """The job's next event; ClientGone (the job cancelled) when the client disconnects.
        The client is checked every POLL_S, also while events keep coming."""
        while True:
            if time.monotonic() - self._checked >= POLL_S:
                self._checked = time.monotonic()
                if await self.request.is_disconnected():
                    self.worker.cancel(self.job)
                    raise ClientGone
            try:
                return await asyncio.wait_for(self.job.events.get(), timeout=POLL_S)
            except asyncio.TimeoutError:
                pass

    async def collect(self, first) -> tuple[str, Finished]:
        """A non-streamed answer from the job's first event on: the whole text and the
        Finished event; raises the job's APIError, or ClientGone."""
        pieces, ev = [], first
        try:
            while True:
                if isinstance(ev, Token):
                    pieces.append(ev.text)
                elif isinstance(ev, Failed):
                    raise ev.error
                elif isinstance(ev, Finished):
                    return "".join(pieces), ev
                ev = await self.next()
        except asyncio.CancelledError:
            self.worker.cancel(self.job)
            raise
