"""Errors in OpenAI's JSON shape: `{"error": {"message", "type", "param", "code"}}` with the matching status.

blockgen's typed errors map onto it: InvalidArgumentError (which names its parameter) and OutlineError become a 400
naming the field; a prompt over the context is a 400 with code `context_length_exceeded`, as OpenAI answers it.
Anything unexpected is a 500 whose body says only that: the traceback goes to the server's log, never to a client.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from blockgen.errors import BlockgenError, InvalidArgumentError, OutlineError
from blockgen.serve.batcher import ContextError, ServerStopping
from blockgen.serve.protocol import API_NAMES

log = logging.getLogger("blockgen.serve")

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          405: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
          503: "server_error"}


class APIError(Exception):
    """An error answered as it is: status, message, the field it is about and a code."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status,
                            headers={"WWW-Authenticate": "Bearer"} if self.status == 401 else None)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def from_exception(exc: Exception) -> APIError:
    """The APIError for an exception raised while serving a request."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ServerStopping):
        return APIError(503, str(exc), code="server_stopping")
    if isinstance(exc, ContextError):
        return APIError(400, f"{exc.parameter} ({exc.value}): {exc.reason}", param=exc.parameter,
                        code="context_length_exceeded")
    if isinstance(exc, InvalidArgumentError):
        param = API_NAMES.get(exc.parameter, exc.parameter)
        return APIError(400, f"{param}={exc.value!r}: {exc.reason}", param=param, code="invalid_value")
    if isinstance(exc, OutlineError):
        return APIError(400, f"outline: {exc}", param="outline", code="invalid_value")
    if isinstance(exc, BlockgenError):
        return APIError(400, str(exc), code="invalid_value")
    log.error("internal error while serving a request", exc_info=exc)
    return APIError(500, f"internal server error ({type(exc).__name__}); the server's log has the details",
                    code="internal_error")


def install(app: FastAPI) -> None:
    """Answer every error in OpenAI's shape."""

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        return from_exception(exc).response()

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            return APIError(400, "the request body is not valid JSON", code="invalid_json").response()
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        return APIError(400, message, param=param, code="invalid_value").response()

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = {404: f"no such route: {request.method} {request.url.path}",
                   405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code,
                                                                                    str(exc.detail))
        return APIError(exc.status_code, message, code="not_found" if exc.status_code == 404 else None).response()

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(BlockgenError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, api_error)
