"""Every failure as OpenAI's error object, {"error": {"message", "type", "param", "code"}},
with a 4xx for the client's mistakes and never a traceback in a response.

FastAPI's own 422 (a body that does not fit the request model) becomes a 400
invalid_request_error naming the first offending field, as OpenAI answers."""
from __future__ import annotations

import time
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlxspec.errors import MlxspecError, first_line

INVALID = "invalid_request_error"
_TYPES = {401: "authentication_error", 404: INVALID, 405: INVALID, 413: INVALID, 429: "rate_limit_error",
          500: "server_error", 503: "server_error"}
MESSAGE_MAX = 500  # characters of a message that may quote the client's junk


class APIError(Exception):
    """An error answered as OpenAI does; raised anywhere in a request's handling."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 type: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _TYPES.get(status, INVALID if 400 <= status < 500 else "server_error")
        self.headers = headers

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(message: str, type: str = INVALID, param: Optional[str] = None, code: Optional[str] = None) -> dict:
    message = " ".join(str(message).split())  # one line, whatever the client sent
    if len(message) > MESSAGE_MAX:
        message = message[: MESSAGE_MAX - 1] + "…"
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def from_exception(exc: BaseException) -> APIError:
    """A failure inside generation: the user's input (MlxspecError) is a 400 with its
    message; anything else is a 500 with one line."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, MlxspecError):
        return APIError(400, str(exc))
    if isinstance(exc, MemoryError) or "memory" in first_line(exc).lower():
        return APIError(500, f"out of memory: {first_line(exc)}", code="out_of_memory")
    return APIError(500, f"internal error: {type(exc).__name__}: {first_line(exc)}")


def _validation_error(exc: RequestValidationError) -> APIError:
    errors = exc.errors()
    if not errors:
        return APIError(400, "invalid request body")
    e = errors[0]
    kind = e.get("type", "")
    loc = [str(p) for p in e.get("loc", ()) if p != "body"]
    if kind == "json_invalid":
        return APIError(400, "the request body is not valid JSON", code="invalid_json")
    if kind == "missing" and not loc:
        return APIError(400, "the request needs a JSON object body", code="invalid_json")
    param = ".".join(loc) or None
    msg = str(e.get("msg", "invalid value"))
    if kind == "missing":
        text = f"missing required parameter: '{param}'"
    elif kind == "extra_forbidden":
        text = f"unrecognized request argument: '{param}'"
    elif param is None:
        text = f"invalid request body: {msg} (send a JSON object)"
    else:
        text = f"invalid value for '{param}': {msg}"
    return APIError(400, text, param=param, code="missing_required_parameter" if kind == "missing" else
                    "invalid_value")


def install(app: FastAPI) -> None:
    """Exception handlers for the app: every answer of an error is an OpenAI error object."""

    from mlxspec.serve import requestlog

    def answer(request: Request, err: APIError):
        requestlog.request(request.method, request.url.path, err.status, time.perf_counter(),
                           error=f"{err.type}: {err.message}")
        return err.response()

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError):
        return answer(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return answer(request, _validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = {404: f"no such endpoint: {request.method} {request.url.path}",
                   405: f"method {request.method} not allowed on {request.url.path}"}.get(
            exc.status_code, str(exc.detail))
        return answer(request, APIError(exc.status_code, message, headers=getattr(exc, "headers", None)))

    @app.exception_handler(MlxspecError)
    async def _user(request: Request, exc: MlxspecError):
        return answer(request, from_exception(exc))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        return answer(request, from_exception(exc))
