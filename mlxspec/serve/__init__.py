"""`mlxspec serve`: an OpenAI-compatible local server over one loaded model.

    app.py         FastAPI routes: /v1/chat/completions, /v1/completions, /v1/models, /health
    schemas.py     request bodies (pydantic, strict types) with mlxspec's extensions
    params.py      a request -> the generation to run (Plan), checked with the engine's limits
    served.py      what the server knows of its model (names, drafter, context, tokenizer)
    worker.py      the one thread that owns the engine: FIFO queue, cancel, idle head training
    relay.py       a job's events -> an answer, watching for the client going away
    sse.py         streamed answers (server-sent events ending with [DONE])
    replies.py     response bodies and chunks in OpenAI's shapes
    usage.py       token counts + the `mlxspec` extension (drafted, accepted, tok/s, ...)
    errors.py      OpenAI error objects for every failure, 4xx for the client's
    guard.py       API key and body size, before anything else
    requestlog.py  one stderr line per request
    server.py      uvicorn on a socket bound here; clean shutdown
"""
