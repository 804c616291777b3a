"""Fixtures of the serve tests: a small saved index, its queries, the loaded demo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from serve_helpers import DIM, build_index, unit_rows


@pytest.fixture(scope="session")
def index_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "small.dehub"
    build_index(path)
    return path


@pytest.fixture(scope="session")
def index(index_file):
    import dehub

    return dehub.Index.load(index_file)


@pytest.fixture(scope="session")
def queries() -> np.ndarray:
    return unit_rows(np.random.default_rng(11), 40, DIM)


@pytest.fixture(scope="session")
def demo_served():
    from dehub.serve.loading import load_demo

    return load_demo()


@pytest.fixture(scope="session")
def demo_server():
    """``dehub serve`` with no INDEX (the bundled demo) on a free loopback port."""
    from serve_helpers import ServerProcess

    server = ServerProcess([])
    yield server
    server.stop()
