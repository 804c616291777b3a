"""Shared fixtures: seeded random unit embeddings and a digest to prove inputs unchanged.

The NNN reference implementation and the tie-aware comparison live in
``tests/reference_nnn.py`` (importable as ``reference_nnn``: pytest puts ``tests/`` on
``sys.path`` because it holds this conftest and no ``__init__.py``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile

import numpy as np
import pytest

# Every Ray cluster the tests start (in this process or a child) is local-only: Ray's own
# switch makes its node address 127.0.0.1 and every server listen on loopback (set before
# any test module imports ray; without it Ray swaps 127.0.0.1 for the machine's address).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# precision="auto"'s measurements are cached per machine (dehub.engine.tuning): the suite
# keeps its own cache, never the user's ~/.cache/dehub
os.environ.setdefault("DEHUB_CACHE_DIR", tempfile.mkdtemp(prefix="dehub-test-cache-"))


def _unit_rows(rng: np.random.Generator, n: int, d: int, dtype=np.float32) -> np.ndarray:
    x = rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(dtype)


def _digest(*arrays) -> str:
    """SHA-256 over dtype, shape and bytes of every array (memmaps included)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20241031)


@pytest.fixture
def unit():
    """``unit(rng, n, d, dtype=np.float32)``: ``n`` random L2-normalized rows."""
    return _unit_rows


@pytest.fixture
def digest():
    """``digest(*arrays)``: a hash to compare before/after a call (inputs unchanged)."""
    return _digest


@pytest.fixture
def numpy_selection(monkeypatch):
    """The numpy paths (the exact engine's :class:`~dehub.engine.topk.RunningTopK`,
    k-means' sums) even where the compiled kernels are built, as where they are not."""
    import dehub.engine._compiled as _compiled

    monkeypatch.setattr(_compiled, "ENABLED", False)


@pytest.fixture(params=["compiled", "numpy"])
def selection(request, monkeypatch):
    """Run a test with each selection the exact engine has: the compiled top-k (skipped
    where it is not built) and numpy's; the results must be the same."""
    import dehub.engine._compiled as _compiled
    import dehub.engine.topk as topk

    if request.param == "numpy":
        monkeypatch.setattr(_compiled, "ENABLED", False)
    elif topk.kernel_isa() is None:
        pytest.skip("the compiled top-k (dehub.engine._topk_kernel) is not built or is turned off")
    return request.param


def _faiss_state(faiss) -> dict[object, dict[str, object]]:
    """What ``faiss.contrib.torch_utils`` changes: the faiss module's functions and the
    methods of every faiss Index class."""
    state: dict[object, dict[str, object]] = {faiss: dict(vars(faiss))}
    for name in dir(faiss):
        obj = getattr(faiss, name)
        if isinstance(obj, type) and issubclass(obj, faiss.Index):
            state[obj] = dict(vars(obj))
    return state


def _restore_faiss(state: dict[object, dict[str, object]]) -> None:
    for owner, before in state.items():
        now = dict(vars(owner))
        for name in now.keys() - before.keys():
            delattr(owner, name)
        for name, value in before.items():
            if now.get(name) is not value:
                setattr(owner, name, value)


@pytest.fixture(scope="session")
def kiez():
    """kiez (the cross-checks in tests/methods), imported without its side effect: its
    import loads ``faiss.contrib.torch_utils``, which replaces every faiss Index's
    ``search`` by one without ``params=``; dehub's IVF/HNSW searches pass
    ``SearchParameters``, so tests run after it failed. Undone here, once."""
    try:
        import faiss
    except ImportError:
        faiss = None
    state = _faiss_state(faiss) if faiss is not None else None
    module = pytest.importorskip("kiez")
    import kiez.hubness_reduction.local_scaling
    import kiez.hubness_reduction.mutual_proximity  # noqa: F401  (every module the tests use)

    if state is not None:
        _restore_faiss(state)
    return module
