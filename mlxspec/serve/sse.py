"""A streamed answer: server-sent events, one `data: {chunk}` per piece of text, the last
chunk with the finish reason, the usage chunk when stream_options.include_usage asks for
it, then `data: [DONE]`. A failure after the first token (headers sent) is one
`data: {"error": ...}` event before [DONE].

sse-starlette watches the connection: a client that goes away cancels this generator,
which cancels the job (the worker stops within a token)."""
from __future__ import annotations

import json
from typing import Callable

from sse_starlette.sse import EventSourceResponse

from mlxspec.serve.replies import Reply
from mlxspec.serve.worker import EngineWorker, Failed, Finished, Job, Token

PING_S = 15  # keep-alive comments while a long prefill runs


def _data(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def stream(job: Job, worker: EngineWorker, reply: Reply, first,
           on_end: Callable[..., None]) -> EventSourceResponse:
    """The SSE response for `job`, whose first event (`first`, not a Failed) was read already.
    on_end(status, finished, error) runs once when the stream ends (finished None: failed or
    cancelled; error: why)."""

    async def events():
        ev, opened, done = first, False, False
        try:
            while True:
                if isinstance(ev, Token):
                    yield _data(reply.chunk(ev.text, first=not opened))
                    opened = True
                elif isinstance(ev, Failed):
                    yield _data(ev.error.body())
                    done = True
                    on_end(ev.error.status, None, f"{ev.error.type}: {ev.error.message}")
                    break
                elif isinstance(ev, Finished):
                    if not opened and reply.kind == "chat":
                        yield _data(reply.chunk("", first=True))
                    yield _data(reply.chunk("", finish_reason=ev.finish_reason))
                    if job.plan.include_usage:
                        yield _data(reply.usage_chunk(ev.usage))
                    done = True
                    on_end(200, ev, None)
                    break
                ev = await job.events.get()
            yield "[DONE]"
        finally:
            if not done:  # the client went away (or the server stops): free the engine
                worker.cancel(job)
                on_end(*((503, None, "server stopping") if worker.stopping else (499, None, "client went away")))

    return EventSourceResponse(events(), ping=PING_S, sep="\n", headers={"Cache-Control": "no-cache"})
