"""`mlxspec serve`: an OpenAI-compatible local server (mlxspec/serve/) over one loaded model."""
from __future__ import annotations

import math
import os
import threading

import click

from mlxspec.cli.common import check_name, check_sampling, check_verify, model_options, verify_options
from mlxspec.errors import InvalidParameterError

MAX_QUEUE_LIMIT = 10_000
IDLE_MAX_S = 24 * 3600.0


def _check(host, port, max_queue, idle_adapt_s, api_key, max_tokens, num_draft) -> None:
    if not host or not host.strip() or any(ord(c) < 33 for c in host):
        raise InvalidParameterError(f"--host must be a host name or address, got {host!r}")
    if not 0 <= port <= 65535:
        raise InvalidParameterError(f"--port must be in 0..65535 (0: any free port), got {port}")
    if not 0 <= max_queue <= MAX_QUEUE_LIMIT:
        raise InvalidParameterError(f"--max-queue must be in 0..{MAX_QUEUE_LIMIT}, got {max_queue}")
    if not math.isfinite(idle_adapt_s) or not 0 <= idle_adapt_s <= IDLE_MAX_S:
        raise InvalidParameterError(f"--idle-adapt must be 0..{IDLE_MAX_S:.0f} seconds, got {idle_adapt_s}")
    if api_key is not None and (not api_key.strip() or any(ord(c) < 33 or ord(c) == 127 for c in api_key)):
        raise InvalidParameterError("--api-key must be non-empty printable text without spaces")
    check_sampling(max_tokens, 0.0, 1.0, 0, None, None, num_draft)


@click.command("serve")
@model_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 exposes the server to your network).")
@click.option("--port", type=int, default=8080, show_default=True, help="Port (0: any free port).")
@click.option("--api-key", default=None, envvar="MLXSPEC_API_KEY", show_envvar=True,
              help="Require 'Authorization: Bearer KEY' on /v1/ (401 otherwise).")
@click.option("--max-queue", type=int, default=8, show_default=True,
              help="Requests that may wait while one generates; more get 503 with Retry-After.")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Allow browser requests from ORIGIN (repeatable; * for any). Off by default.")
@click.option("-n", "--max-tokens", type=int, default=512, show_default=True,
              help="Default most tokens per reply (a request's max_tokens overrides it).")
@click.option("--num-draft", type=int, default=None, help="Initial draft length (adapts).")
@click.option("--adapt/--no-adapt", "adapt", default=None,
              help="The draft head learns from the replies, between requests "
                   "(default: on when a head drafts).")
@click.option("--idle-adapt", "idle_adapt_s", type=float, default=30.0, show_default=True, metavar="SECONDS",
              help="Most head training after each reply, stopped at once by a waiting request.")
@verify_options
def serve(model, draft, host, port, api_key, max_queue, cors_origins, max_tokens, num_draft, adapt,
          idle_adapt_s, verify, relax_weight, relax_budget):
    """Serve a model over an OpenAI-compatible HTTP API (chat, completions, streaming)."""
    import mlxspec
    from mlxspec.cli.common import setup_logging
    from mlxspec.serve import requestlog, server
    from mlxspec.serve.app import create_app
    from mlxspec.serve.served import ServedModel
    from mlxspec.serve.worker import EngineWorker

    setup_logging()
    requestlog.setup()
    check_name(model, "model")
    check_name(draft, "draft")
    _check(host, port, max_queue, idle_adapt_s, api_key, max_tokens, num_draft)
    verify_kw = check_verify(verify, relax_weight, relax_budget)
    if any(o != "*" and not o.startswith(("http://", "https://")) for o in cors_origins):
        raise InvalidParameterError("--cors-origin takes an origin like http://localhost:3000, or *")
    engine_kw = dict(verify_kw, **({"num_draft": num_draft} if num_draft is not None else {}))

    def load():
        return mlxspec.load(model, draft, adapt=adapt, **engine_kw)

    if _rank() != 0:  # under mlx.launch only rank 0 serves HTTP; this rank serves its layers
        load()  # ... as under `generate`, on this thread, and exits there
        raise InvalidParameterError("a rank other than 0 came back from loading (mlx.launch): nothing to serve")
    sock = server.bind(host, port)  # before loading: a busy port fails at once

    worker = EngineWorker(load, max_queue=max_queue, idle_s=idle_adapt_s, on_adapt=_log_adapt)
    # a word while a big model loads; a bad name fails before it, in one line
    note = threading.Timer(2.0, click.echo, (f"mlxspec serve: loading {model or 'the default model'} …",),
                           {"err": True})
    note.daemon = True
    note.start()
    try:
        engine = worker.ready.result()  # the load's error, if any, is one line
    finally:
        note.cancel()
    served = ServedModel.of(engine, model, max_tokens)
    app = create_app(worker, served, api_key=api_key, cors_origins=cors_origins)

    def listening(url: str) -> None:
        click.echo(f"mlxspec serve: {served.name} (draft {served.draft}, verify {served.verify}) on {url}/v1 "
                   f"· max queue {max_queue}{' · API key required' if api_key else ''} · Ctrl-C stops",
                   err=True)

    try:
        server.run(app, sock, on_listening=listening, on_exit=worker.shutdown)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a server is stopped: uvicorn has shut down cleanly, exit 0
    finally:
        worker.stop()
        sock.close()
    click.echo("mlxspec serve: stopped", err=True)


def _rank() -> int:
    """This process's rank under mlx.launch / mpirun (0 otherwise), from the launcher's
    environment, so MLX's distributed layer is not started on this thread."""
    for key in ("MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        try:
            return int(os.environ[key])
        except (KeyError, ValueError):
            continue
    return 0


def _log_adapt(out: dict) -> None:
    import logging

    logging.getLogger("mlxspec.serve").info("head adapted: %d steps in %.2f s, saved", out["steps"], out["seconds"])

