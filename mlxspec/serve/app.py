"""The FastAPI app: OpenAI's chat and completions endpoints over one EngineWorker, plus
GET /v1/models and GET /health.

A request is validated (schemas.py, then params.py against the engine's limits) before it
queues; a full queue is a 503 with Retry-After; the answer waits for the job's first
event, then streams (sse.py) or is collected (relay.py). Every error is an OpenAI error
object (errors.py); every request gets one log line (requestlog.py)."""
from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import Callable, Optional, Sequence

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from mlxspec.serve import errors, requestlog, sse
from mlxspec.serve.errors import APIError
from mlxspec.serve.guard import Guard
from mlxspec.serve.params import chat_plan, completion_plan
from mlxspec.serve.relay import ClientGone, Relay
from mlxspec.serve.replies import Reply
from mlxspec.serve.schemas import ChatRequest, CompletionRequest
from mlxspec.serve.served import ServedModel
from mlxspec.serve.worker import EngineWorker, Failed, Job, QueueFull


def create_app(worker: EngineWorker, served: ServedModel, api_key: Optional[str] = None,
               cors_origins: Sequence[str] = ()) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app):
        yield
        worker.stop()  # the server stops: cancel what runs and waits, end idle training

    app = FastAPI(title="mlxspec", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    errors.install(app)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": served.name, "draft": served.draft, "verify": served.verify,
                "busy": worker.busy, "queued": len(worker.queue), "max_queue": worker.queue.max_waiting}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [served.card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if not served.knows(model_id):
            raise APIError(404, f"the model '{model_id}' does not exist; this server serves '{served.name}'",
                           param="model", code="model_not_found")
        return served.card()

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        return await _answer(request, "chat", lambda: chat_plan(body, served))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        return await _answer(request, "completion", lambda: completion_plan(body, served))

    async def _answer(request: Request, kind: str, make_plan: Callable):
        started, path = time.perf_counter(), request.url.path
        stream, job, handed_off = False, None, False
        try:
            plan = await run_in_threadpool(make_plan)  # a long prompt's tokenizing stays off the event loop
            stream = plan.stream
            job = Job(plan)
            if worker.stopping:
                raise APIError(503, "the server is shutting down; retry on its next start",
                               code="server_shutting_down")
            try:
                worker.submit(job)
            except QueueFull as full:
                raise APIError(503, f"the server is busy ({len(worker.queue)} requests waiting, the most it "
                               "queues); retry later", code="queue_full",
                               headers={"Retry-After": str(full.retry_after)}) from None
            relay = Relay(job, request, worker)
            first = await relay.next()
            if isinstance(first, Failed):
                raise first.error
            reply = Reply(kind, served.name)
            if stream:
                def on_end(status, finished, error):
                    requestlog.request("POST", path, status, started, finished, stream=True, error=error)
                handed_off = True  # from here the stream's generator cancels the job
                return sse.stream(job, worker, reply, first, on_end)
            text, finished = await relay.collect(first)
            requestlog.request("POST", path, 200, started, finished)
            return JSONResponse(reply.whole(text, finished.finish_reason, finished.usage))
        except APIError as exc:
            requestlog.request("POST", path, exc.status, started, stream=stream, error=f"{exc.type}: {exc.message}")
            return exc.response()
        except asyncio.CancelledError:  # the server stops, or the connection task is cancelled
            if job is not None and not handed_off:
                worker.cancel(job)
            raise
        except ClientGone:
            requestlog.request("POST", path, 499, started, stream=stream, error="client went away")
            return Response(status_code=499)
        except Exception as exc:  # a bug: one line in the log and the answer, never a traceback
            err = errors.from_exception(exc)
            requestlog.request("POST", path, err.status, started, stream=stream, error=err.message)
            return err.response()

    app.add_middleware(Guard, api_key=api_key)
    if cors_origins:  # outermost, so a preflight is answered before the API key is asked for
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["*"])
    return app
