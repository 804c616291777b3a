"""A method registered in this test alone works through Index, the exports and the distributed
runner, with no change outside its own class (issue 21: knowledge lives in the method).

``ToyMaxNNN`` is NNN with k = 1 written from scratch on the public estimator contract: its
bias is ``alpha`` times each gallery item's largest reference score. Nothing in dehub names
it; Index, ``dehub.load``, the FAISS export and the Ray runner ask it through its hooks.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from numbers import Real
from typing import ClassVar

import numpy as np
import pytest

import dehub
from dehub import Index, exact_search
from dehub.methods import METHODS, MethodTags
from dehub.methods._params import Constraint, Interval
from dehub.methods.base import AdditiveBiasCorrector, ReferenceFit

D = 16


class ToyMaxNNN(ReferenceFit, AdditiveBiasCorrector):
    """``score(q, r) = q . r - alpha * max_j q_j . r`` (NNN with k = 1), statistics ``max_score``."""

    name = "toy_max_nnn"
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {"alpha": [Interval(Real, 0.0, 10.0)]}
    _cached_params = frozenset({"alpha"})

    def __init__(self, alpha: float = 0.5) -> None:
        self.alpha = alpha

    def __dehub_tags__(self) -> MethodTags:
        return MethodTags(offset=True, incremental=True, row_decomposable=True)

    def _row_statistics(self, gallery, reference, *, memory_budget: int, progress: bool):
        scores, _ = exact_search(gallery, reference, 1, memory_budget=memory_budget)
        return {"max_score": scores}

    def _set_statistics(self, gallery, statistics, n_reference):
        scores = np.asarray(statistics["max_score"], dtype=np.float32)
        if scores.shape != (gallery.shape[0], 1):
            raise ValueError(f"max_score has shape {scores.shape}; expected ({gallery.shape[0]}, 1)")
        self.max_score_, self.n_reference_, self.gallery_ = scores, n_reference, gallery

    def fitted_statistics(self):
        return {"max_score": self.max_score_}

    def merge_reference_statistics(self, statistics, new_statistics, *, n_reference):
        return {"max_score": np.maximum(statistics["max_score"], new_statistics["max_score"])}

    def _compute_bias(self):
        return (np.float32(self.alpha) * self.max_score_[:, 0]).astype(np.float32)

    def _fitted_arrays(self):
        return self.fitted_statistics()

    def _restore(self, gallery, arrays):
        self._set_statistics(gallery, arrays, None)


def _unit(rng, n, d=D):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _expected(queries, gallery, reference, alpha, k):
    bias = alpha * (gallery @ reference.T).max(axis=1)
    dense = queries @ gallery.T - bias[None, :]
    order = np.argsort(-dense, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dense, order, axis=1), order


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(METHODS, ToyMaxNNN.name, ToyMaxNNN)  # registered here alone
    return ToyMaxNNN


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    return {
        "gallery": _unit(rng, 300),
        "reference": _unit(rng, 200),
        "queries": _unit(rng, 20),
        "more": _unit(rng, 25),
    }


def test_index_build_search_save_load_update(registered, data, tmp_path):
    g, r, q = data["gallery"], data["reference"], data["queries"]
    index = Index.build(
        g, r, method=registered.name, alpha=0.75, ids=np.arange(1000, 1300), keep_reference=True
    )
    want_s, want_rows = _expected(q, g, r, 0.75, 10)
    s, ids = index.search(q, 10)
    np.testing.assert_array_equal(ids, want_rows + 1000)
    np.testing.assert_allclose(s, want_s, atol=1e-5)
    back = dehub.load(index.save(tmp_path / "toy.dehub"))  # persistence through the method's own arrays
    assert type(back.model) is registered and back.model.alpha == 0.75
    np.testing.assert_array_equal(back.search(q, 10)[1], ids)
    np.testing.assert_allclose(back.with_params(alpha=0.25).model.bias_, 0.25 * back.model.max_score_[:, 0])
    back.add(data["more"])  # growth through the row-decomposable hooks
    refit = Index.build(np.concatenate([g, data["more"]]), r, method=registered.name, alpha=0.75)
    np.testing.assert_array_equal(back.model.bias_, refit.model.bias_)
    back.remove(np.arange(1000, 1100))
    assert back.n_items == 225


def test_faiss_export_serves_the_toy_scores(registered, data, tmp_path):
    faiss = pytest.importorskip("faiss", reason="the FAISS export needs faiss-cpu (pip install dehub[faiss])")
    from dehub.export import export_faiss, query_vectors

    index = Index.build(data["gallery"], data["reference"], method=registered.name, alpha=0.5)
    path = export_faiss(index, tmp_path / "toy.faiss")
    store = faiss.read_index(str(path))
    _, got = store.search(query_vectors(data["queries"]), 10)
    np.testing.assert_array_equal(got, index.search(data["queries"], 10)[1])


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray", reason="the distributed runner needs Ray (pip install dehub[ray])")
    pytest.importorskip("ray.data", reason="the distributed runner needs Ray Data")
    from ray import cloudpickle  # Ray's own copy pickles the actors' arguments

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the toy class travels to the workers
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    tmp = tempfile.mkdtemp(prefix="dhtoy-")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_distributed_runner_fits_the_toy_method(registered, cluster, data, tmp_path):
    from dehub.distributed import fit

    shards = tmp_path / "gallery"
    shards.mkdir()
    np.save(shards / "a.npy", data["gallery"][:170])
    np.save(shards / "b.npy", data["gallery"][170:])
    np.save(tmp_path / "reference.npy", data["reference"])
    summary = fit(
        ToyMaxNNN(alpha=0.5),
        shards,
        tmp_path / "reference.npy",
        tmp_path / "run",
        part_rows=64,
        progress=False,
    )
    assert summary.rows == 300 and summary.computed == summary.parts
    run = dehub.load(tmp_path / "run")  # the run directory opens like an index file
    single = Index.build(data["gallery"], data["reference"], method=registered.name, alpha=0.5)
    np.testing.assert_array_equal(np.asarray(run.model.max_score_), single.model.max_score_)
    for got, want in zip(run.search(data["queries"], 10), single.search(data["queries"], 10)):
        np.testing.assert_array_equal(got, want)
