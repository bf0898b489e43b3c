"""What a request must pass before any handler runs (a plain ASGI middleware, so that it
also comes before body parsing): the bearer token on /v1/ when the server has an API key
(401), and a cap on the body's declared size (413)."""
from __future__ import annotations

import secrets
import time
from typing import Optional

from mlxspec.serve import requestlog
from mlxspec.serve.errors import APIError

MAX_BODY = 32 << 20  # bytes: far above any prompt a local model's context holds


class Guard:
    def __init__(self, app, api_key: Optional[str] = None, max_body: int = MAX_BODY):
        self.app, self.api_key, self.max_body = app, api_key, max_body

    def _refusal(self, scope) -> Optional[APIError]:
        headers = {k.lower(): v for k, v in scope.get("headers", ())}
        if self.api_key is not None and scope["path"].startswith("/v1") and scope.get("method") != "OPTIONS":
            auth = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode("utf-8", "replace"),
                                                                        self.api_key.encode("utf-8")):
                what = "no API key given" if not auth else "incorrect API key"
                return APIError(401, f"{what}: send 'Authorization: Bearer <key>' with the key the server "
                                "was started with (--api-key)", code="invalid_api_key",
                                headers={"WWW-Authenticate": "Bearer"})
        size = headers.get(b"content-length")
        if size is not None:
            try:
                n = int(size)
            except ValueError:
                return APIError(400, "invalid Content-Length header")
            if n > self.max_body:
                return APIError(413, f"the request body is {n} bytes; at most {self.max_body}",
                                code="request_too_large")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                requestlog.request(scope.get("method", "?"), scope["path"], refusal.status, time.perf_counter(),
                                   error=refusal.code)
                await refusal.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)
