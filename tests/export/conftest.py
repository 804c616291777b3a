"""A fitted NNN index on clustered unit embeddings, and a tie-aware ranking check.

The store-side query helpers in the test modules import only the store's client (and
numpy): they form the query vectors by hand, as a user's serving code would.
"""

from __future__ import annotations

import numpy as np
import pytest

import dehub


def _draw(rng, centers, n):
    x = centers[rng.integers(0, centers.shape[0], n)] + 0.8 * rng.standard_normal((n, centers.shape[1]))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="session")
def data():
    rng = np.random.default_rng(11)
    centers = np.random.default_rng(12).standard_normal((40, 32))
    return {
        "gallery": _draw(rng, centers, 2000),
        "reference": _draw(rng, centers, 4000),
        "queries": _draw(rng, centers, 60),
    }


@pytest.fixture(scope="session")
def index(data):
    ids = np.arange(2000, dtype=np.int64) * 5 + 3
    return dehub.Index.build(data["gallery"], data["reference"], k=16, alpha=0.75, ids=ids)


@pytest.fixture(scope="session")
def exact(index, data):
    """dehub's exact corrected search: (scores, ids, dense corrected scores by id)."""
    scores, ids = index.search(data["queries"], 10)
    dense = index.model.score(data["queries"]).astype(np.float64)
    by_id = dict(zip(index.ids.tolist(), range(index.n_items)))
    return scores, ids, dense, by_id


@pytest.fixture(autouse=True)
def _no_shadowed_datasets():
    """lancedb imports ``datasets`` when it is in ``sys.modules``; under pytest that can be
    ``tests/datasets/`` as a namespace package (see tests/embed/conftest.py): drop it."""
    import sys

    mod = sys.modules.get("datasets")
    if mod is not None and getattr(mod, "__file__", None) is None:
        paths = [str(p) for p in getattr(mod, "__path__", [])]
        if paths and all(p.rstrip("/").endswith("tests/datasets") for p in paths):
            del sys.modules["datasets"]
    yield


@pytest.fixture(scope="session")
def pg_dsn():
    """A real Postgres with pgvector, started by the test session itself (PyPI ``pgserver``:
    a bundled server in a temporary directory, on a Unix socket; stopped at the end).

    Not under pytest's ``tmp_path``: as root, pgserver runs Postgres as user ``pgserver``,
    who must traverse the data directory's parents, and every pytest session on the
    machine resets ``/tmp/pytest-of-root`` to mode 0700 (a concurrent session broke initdb).
    """
    import shutil
    import tempfile

    pgserver = pytest.importorskip("pgserver", reason="pgserver (the 'pgvector' test extra) is not installed")
    pytest.importorskip("psycopg", reason="psycopg (the 'pgvector' extra) is not installed")
    root = tempfile.mkdtemp(prefix="dehub-pg-")
    try:
        server = pgserver.get_server(root, cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def minilm():
    """The bundled MiniLM WordNet data (real text embeddings): definitions -> lemmas,
    gallery = 4,000 test lemmas, reference = the reference split's definitions, queries =
    200 test definitions (held out: not the recall check's probe queries)."""
    from dehub.datasets import load_wordnet_benchmark

    bench = load_wordnet_benchmark()
    gallery = np.ascontiguousarray(bench.test.b[:4000], dtype=np.float32)
    reference = np.ascontiguousarray(bench.reference_for("a2b"), dtype=np.float32)
    queries = np.ascontiguousarray(bench.test.a[::50][:200], dtype=np.float32)
    index = dehub.Index.build(gallery, reference, k=16, alpha=0.75)
    return index, queries


@pytest.fixture(scope="session")
def planted_hubs():
    """Planted hubs: 2% of the gallery pulled towards the queries' mean direction (they
    top the plain ranking of many queries); the correction must demote them."""
    rng = np.random.default_rng(5)
    d, n = 48, 3000
    centers = rng.standard_normal((30, d))
    hub_dir = rng.standard_normal(d)
    g = centers[rng.integers(0, 30, n)] + 0.9 * rng.standard_normal((n, d))
    g[: n // 50] += 3.0 * hub_dir
    g = (g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32)
    ref = centers[rng.integers(0, 30, 5000)] + 0.9 * rng.standard_normal((5000, d)) + 0.6 * hub_dir
    ref = (ref / np.linalg.norm(ref, axis=1, keepdims=True)).astype(np.float32)
    q = centers[rng.integers(0, 30, 200)] + 0.9 * rng.standard_normal((200, d)) + 0.6 * hub_dir
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    return dehub.Index.build(g, ref, k=16, alpha=0.75), q
