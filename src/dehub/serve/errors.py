"""The one error answer of ``dehub serve``: ``{"error", "expected", "received"}``.

:class:`ApiError` is raised by checks and dependencies; :func:`install_error_handlers`
turns it, FastAPI's validation errors and Starlette's 404/405 into that body.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .models import ErrorResponse

__all__ = ["ApiError", "ERRORS", "install_error_handlers", "responses"]


class ApiError(Exception):
    """A 4xx (or 503) answer ``{"error", "expected", "received"}``."""

    def __init__(
        self, status: int, error: str, expected: str, received: str, headers: dict[str, str] | None = None
    ):
        super().__init__(error)
        self.status = status
        self.error = error
        self.expected = expected
        self.received = received
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": self.error, "expected": self.expected, "received": self.received}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


_DESCRIPTIONS = {
    400: "bad request (e.g. text for an index without a text encoder)",
    401: "missing or wrong bearer token",
    403: "forbidden (admin endpoints without a configured token)",
    404: "not found",
    408: "the request body was not received in time",
    409: "reload failed; the previous version is still served",
    413: "too many queries or too large a body",
    422: "invalid input (outside the bounds stated in the schema)",
    503: "the index file changed or was truncated under the server: reload it",
}

#: The error answers every API endpoint may give.
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse, "description": _DESCRIPTIONS[s]} for s in (400, 401, 408, 413, 422, 503)
}


def responses(*extra: int) -> dict[int | str, dict[str, Any]]:
    """:data:`ERRORS` plus the given statuses."""
    return {**ERRORS, **{s: {"model": ErrorResponse, "description": _DESCRIPTIONS[s]} for s in extra}}


def _short(value: Any, limit: int = 160) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validation_error(exc: RequestValidationError) -> ApiError:
    """FastAPI's validation error as an :class:`ApiError` naming the first problem."""
    errors = exc.errors()
    if not errors:
        return ApiError(422, "invalid request", "a body matching the OpenAPI schema", "?")
    e = errors[0]
    loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
    etype = str(e.get("type", ""))
    if etype == "json_invalid":
        err = ApiError(400, "the body is not valid JSON", "a JSON object", str(e.get("msg", "")))
    elif etype == "missing":
        err = ApiError(422, f"{loc}: field required", f"a value for {loc!r}", "nothing")
    elif etype == "extra_forbidden":
        err = ApiError(
            422, f"unknown field {loc!r}", "only the fields of the OpenAPI schema", _short(e.get("input"))
        )
    else:
        inp = e.get("input")
        msg = str(e.get("msg", "a value of the schema's type"))
        err = ApiError(
            422,
            f"{loc}: {msg}",
            msg.replace("Input should be ", "").replace("Value error, ", ""),
            f"{type(inp).__name__} {_short(inp)}",
        )
    if len(errors) > 1:
        err.error += f" (and {len(errors) - 1} more problems)"
    return err


def install_error_handlers(app: FastAPI) -> None:
    """Every error of ``app`` answers ``{"error", "expected", "received"}``."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            err = ApiError(404, "not found", "a path of the OpenAPI schema (/openapi.json)", request.url.path)
        elif exc.status_code == 405:
            err = ApiError(405, "method not allowed", "the method of the OpenAPI schema", request.method)
        else:
            err = ApiError(exc.status_code, str(exc.detail), "see /openapi.json", request.url.path)
        err.headers = dict(exc.headers) if exc.headers else None
        return err.response()
