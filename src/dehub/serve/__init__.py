"""``dehub serve``: hubness-corrected search over HTTP (FastAPI + uvicorn).

Needs the ``serve`` extra (``pip install dehub[serve]``); importing :mod:`dehub.serve.cli`
needs nothing beyond the core, the app is imported when the command runs.
See ``docs/serve.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._extras import load_feature

if TYPE_CHECKING:
    from .app import Settings, create_app

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(load_feature("dehub.serve.app", "dehub.serve"), name)
    raise AttributeError(f"module 'dehub.serve' has no attribute {name!r}")
