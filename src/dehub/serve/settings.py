"""What ``dehub serve`` can be told: one frozen :class:`Settings` per app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .backends import BackendName

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    """Everything ``dehub serve`` can be told (the CLI fills it; tests build it directly).

    ``source=None`` serves the bundled WordNet demo. ``token`` (or the environment
    variable ``DEHUB_TOKEN``, read by the CLI) protects every endpoint except ``/``,
    ``/health`` and the OpenAPI schema, and enables ``/admin/reload``.

    ``backend``: ``exact`` (dehub's engine), ``hnsw`` (a FAISS graph, efSearch tuned to
    ``recall``) or ``auto`` (HNSW above ``hnsw_threshold`` items for offset methods).
    """

    source: str | None = None
    backend: BackendName = "auto"
    hnsw_threshold: int | None = None
    recall: float = 0.99
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_batch: int = 256
    max_k: int = 1000
    max_body_bytes: int = 8 * 2**20
    max_text_chars: int = 2000
    body_timeout_s: float = 30.0
    batching: bool = True
    normalize: Literal["none", "l2"] = "none"
    texts_file: str | None = None
    text_encoder: str | None = None
    onnx_encoder: str | None = None
    #: the text encoder's runtime: auto (ONNX where available, else torch), torch, onnx
    encoder: Literal["auto", "torch", "onnx"] = "auto"
    name: str | None = None
    demo_params: dict[str, Any] = field(default_factory=dict)
    watch_seconds: float = 0.0
    handle_sighup: bool = False
    preload_encoder: bool = False
