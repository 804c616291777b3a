"""The OpenAPI schema states what the server enforces.

FastAPI derives the schema from the pydantic models (:mod:`dehub.serve.models`), which
cannot know this server's limits or its index. :func:`install_bounded_openapi` writes
them in: batch size, the index's dimension, the value bound of
:mod:`dehub.serve.validation`, ``k``, text length and non-blank texts, exactly one of
``vectors``/``text`` (``text`` only where the index has a text encoder), and clip-
retrieval's null-only ``image``/``image_url``. A request valid under the schema is
accepted (checked by the fuzz test with schemathesis' ``positive_data_acceptance``).
The schema follows the served index: it is rebuilt after a reload.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .models import SearchRequest
from .validation import VALUE_BOUND

__all__ = ["install_bounded_openapi"]


def _number() -> dict[str, Any]:
    return {"type": "number", "minimum": -VALUE_BOUND, "maximum": VALUE_BOUND}


def _vector(dim: int) -> dict[str, Any]:
    return {"type": "array", "items": _number(), "minItems": dim, "maxItems": dim}


def _text(max_chars: int) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_chars, "pattern": r"\S"}


def _k(max_k: int, default: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": max_k}
    if default is not None:
        out["default"] = default
    return out


def bound_schema(
    schema: dict[str, Any], *, dim: int, has_text: bool, max_batch: int, max_k: int, max_text_chars: int
) -> dict[str, Any]:
    """``schema`` (FastAPI's) with this server's bounds written into its request bodies."""
    comp = schema.setdefault("components", {}).setdefault("schemas", {})
    # /search parses its body itself (dehub.serve.responses.parse_body) and names the
    # model by reference: its schema goes into the components here
    comp.setdefault(
        "SearchRequest", SearchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    search = comp.get("SearchRequest")
    if search is not None:
        props = search["properties"]
        props["vectors"] = {
            "type": "array",
            "items": _vector(dim),
            "minItems": 1,
            "maxItems": max_batch,
            "description": f"query embeddings: 1..{max_batch} rows of {dim} numbers, |value| <= {VALUE_BOUND:g}",
        }
        props["k"] = {**_k(max_k, 10), "description": f"results per query (1..{max_k})"}
        if has_text:
            props["text"] = {
                "type": "array",
                "items": _text(max_text_chars),
                "minItems": 1,
                "maxItems": max_batch,
                "description": f"query texts (1..{max_batch}), embedded by the index's text encoder",
            }
            search["oneOf"] = [{"required": ["vectors"]}, {"required": ["text"]}]
        else:
            props.pop("text", None)
            search["required"] = ["vectors"]
    knn = comp.get("KnnRequest")
    if knn is not None:
        props = knn["properties"]
        props["embedding_input"] = {"anyOf": [_vector(dim), {"type": "null"}]}
        props["image"] = {"type": "null", "description": "dehub has no image encoder: send embedding_input"}
        props["image_url"] = {
            "type": "null",
            "description": "dehub has no image encoder: send embedding_input",
        }
        props["num_images"] = {**_k(max_k, 40)}
        props["num_result_ids"] = {"anyOf": [_k(max_k), {"type": "null"}]}
        branches: list[dict[str, Any]] = [
            {
                "required": ["embedding_input"],
                "properties": {"embedding_input": {"type": "array"}, "text": {"type": "null"}},
            }
        ]
        if has_text:
            props["text"] = {"anyOf": [_text(max_text_chars), {"type": "null"}]}
            branches.append(
                {
                    "required": ["text"],
                    "properties": {"text": {"type": "string"}, "embedding_input": {"type": "null"}},
                }
            )
        else:
            props["text"] = {"type": "null", "description": "this index has no text encoder"}
        knn["oneOf"] = branches
    meta = comp.get("MetadataRequest")
    if meta is not None:
        meta["properties"]["ids"] = {
            "type": "array",
            "items": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
            "maxItems": max_k,
        }
    return schema


def install_bounded_openapi(app: FastAPI) -> None:
    """``app.openapi()`` returns the bounded schema of the index served now."""

    def openapi() -> dict[str, Any]:
        ctx = app.state.ctx
        served = ctx.state.served
        key = (served.version, served.dim, served.text_encoder is not None)
        cached = getattr(app.state, "openapi_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        s = ctx.settings
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schema = bound_schema(
            schema,
            dim=served.dim,
            has_text=served.text_encoder is not None,
            max_batch=s.max_batch,
            max_k=s.max_k,
            max_text_chars=s.max_text_chars,
        )
        app.state.openapi_cache = (key, schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
