"""The app of one ``dehub serve --workers N`` process (uvicorn imports it in each worker).

The parent process loaded the index once (building and saving an HNSW graph if needed)
and passed its settings in the environment; each worker maps the same index file and
graph, so their pages are shared, not copied N times.
"""

from __future__ import annotations

import json
import os

from fastapi import FastAPI

from .app import create_app
from .settings import Settings

__all__ = ["create_worker_app"]


def create_worker_app() -> FastAPI:
    raw = json.loads(os.environ["DEHUB_SERVE_SETTINGS"])
    raw["cors_origins"] = tuple(raw.get("cors_origins", ()))
    raw["handle_sighup"] = False  # uvicorn's supervisor owns the signals of its workers
    return create_app(Settings(**raw))
