"""From a job's events to an answer, on the event loop, watching the client: a client
that goes away while its job waits or runs cancels it (the worker stops within a token).

Both kinds of answer wait for the job's first event before answering, so that a failure
before the first token (a model error) is a proper HTTP error, not a 200 stream holding
an error."""
from __future__ import annotations

import asyncio
from typing import Optional

from starlette.requests import Request

from mlxspec.serve.worker import EngineWorker, Failed, Finished, Job, Token

POLL_S = 0.1  # how often a waiting answer checks that its client is still there


class ClientGone(Exception):
    pass


async def next_event(job: Job, request: Optional[Request], worker: EngineWorker):
    """The job's next event; ClientGone (the job cancelled) when the client disconnects."""
    while True:
        try:
            return await asyncio.wait_for(job.events.get(), timeout=POLL_S)
        except asyncio.TimeoutError:
            if request is not None and await request.is_disconnected():
                worker.cancel(job)
                raise ClientGone from None


async def collect(job: Job, request: Request, worker: EngineWorker, first) -> tuple[str, Finished]:
    """A non-streamed answer from the job's first event on: the whole text and the Finished
    event; raises the job's APIError, or ClientGone."""
    pieces, ev = [], first
    try:
        while True:
            if isinstance(ev, Token):
                pieces.append(ev.text)
            elif isinstance(ev, Failed):
                raise ev.error
            elif isinstance(ev, Finished):
                return "".join(pieces), ev
            ev = await next_event(job, request, worker)
    except asyncio.CancelledError:
        worker.cancel(job)
        raise
