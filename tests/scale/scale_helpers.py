"""Helpers shared by the scale tests (importable: pytest puts tests/scale on sys.path)."""

from __future__ import annotations

import pytest


def has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


needs_faiss = pytest.mark.skipif(not has_faiss(), reason="faiss is not importable: pip install dehub[faiss]")
