"""One fast JSON encoding of the answers and one parse of request bodies.

``/search`` and ``/knn-service`` are the hot routes: their bodies are parsed once, from
bytes, by pydantic-core (:func:`parse_body`: JSON straight into the typed model, no
intermediate Python ``json.loads`` tree) and their answers encoded by pydantic-core's
serializer (:class:`FastJSONResponse`), both already dependencies of FastAPI. Measured
on the loaded 2-core machine (docs/serve.md, "Request path"): the stdlib's ``json``
decode of a 384-float query cost 0.6 ms of the event loop per request.
"""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic_core
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from .errors import validation_error

__all__ = ["FastJSONResponse", "parse_body", "json_body"]

M = TypeVar("M", bound=BaseModel)


class FastJSONResponse(Response):
    """``application/json`` encoded by pydantic-core (same values as ``json.dumps``)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return pydantic_core.to_json(content)


def parse_body(model: type[M], body: bytes) -> M:
    """``body`` (JSON bytes) as ``model``, or the API's 400/422 naming the first problem."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(RequestValidationError(exc.errors(include_url=False))) from None


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a route that parses its body with :func:`parse_body`."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}
