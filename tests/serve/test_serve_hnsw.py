"""The HNSW backend keeps the correction: recall against the exact engine on planted hubs.

The data set plants hubs (items near the centre of the query distribution, in many
queries' plain top-10); NNN demotes them. The graph's efSearch is tuned on the index's
reference queries; recall is then measured on queries it was not tuned on.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

pytest.importorskip("faiss")

from dehub.export.hnsw import graph_paths
from dehub.export.recall import recall_at
from dehub.serve.app import Settings, create_app
from dehub.serve.loading import load_served

D, N, N_HUBS = 32, 6000, 60


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _draw(rng: np.random.Generator, u: np.ndarray, m: int) -> np.ndarray:
    """Queries and items: isotropic noise around a shared direction ``u``."""
    return _unit(rng.standard_normal((m, D)) / np.sqrt(D) + u)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    import dehub

    rng = np.random.default_rng(5)
    u = _unit(rng.standard_normal((1, D)))
    gallery = _draw(rng, u, N)
    gallery[:N_HUBS] = _unit(u + 0.3 * rng.standard_normal((N_HUBS, D)) / np.sqrt(D))  # planted hubs near u
    reference = _draw(rng, u, 3000)
    ids = np.arange(N, dtype=np.int64) * 7 + 3
    index = dehub.Index.build(gallery, reference, method="nnn", ids=ids, keep_reference=True, k=16, alpha=0.8)
    path = tmp_path_factory.mktemp("hnsw") / "planted.dehub"
    index.save(path)
    held_out = _draw(np.random.default_rng(99), u, 1000)  # never tuned on
    return path, dehub.Index.load(path), held_out


def test_planted_hubs_are_hubs_and_the_correction_demotes_them(planted):
    from dehub import exact_search

    _, index, held_out = planted
    _, plain = exact_search(held_out, index.model.gallery_, 10)
    _, corrected = index.model.search(held_out, 10, normalize="none")
    hub_rows = np.arange(N_HUBS)
    assert np.isin(plain, hub_rows).sum() > 10 * max(1, np.isin(corrected, hub_rows).sum())


def test_hnsw_recall_reaches_the_target_on_queries_not_tuned_on(planted):
    path, index, held_out = planted
    served = load_served(path, backend="hnsw", recall=0.99)
    info = served.hnsw
    assert served.backend.name == "hnsw" and info is not None
    assert info["form"] == "d+2" and info["recall"] >= 0.99 and "reference queries" in info["probe_source"]
    _, approx = served.backend.search(held_out, 10)
    _, exact = index.search(held_out, 10)
    assert recall_at(approx, exact) >= 0.99
    # scores are the exact corrected scores of the items found
    s, i = served.backend.search(held_out[:50], 10)
    rows = served.rows_of(i)
    want = np.einsum("qkd,qd->qk", index.model.gallery_[rows], held_out[:50]) - index.model.bias_[rows]
    np.testing.assert_allclose(s, want, atol=1e-5)
    # the plain ranking from the same graph
    from dehub import exact_search

    _, prow = exact_search(held_out, index.model.gallery_, 10)
    _, pids = served.backend.search(held_out, 10, corrected=False)
    assert recall_at(pids, index.ids[prow]) >= 0.97


def test_graph_is_saved_and_reused_not_rebuilt(planted, tmp_path):
    import shutil

    path, _, held_out = planted
    copy = tmp_path / "copy.dehub"
    shutil.copy(path, copy)
    first = load_served(copy, backend="hnsw")
    gpath, jpath = graph_paths(copy)
    assert gpath.is_file() and jpath.is_file()
    stamp = (gpath.stat().st_mtime_ns, jpath.stat().st_mtime_ns)
    second = load_served(copy, backend="hnsw")
    assert (gpath.stat().st_mtime_ns, jpath.stat().st_mtime_ns) == stamp  # not rewritten
    assert second.hnsw == first.hnsw  # same efSearch, recall, build time: the stored graph
    np.testing.assert_array_equal(
        second.backend.search(held_out, 10)[1], first.backend.search(held_out, 10)[1]
    )
    # another recall target re-tunes efSearch on the stored graph (no rebuild)
    third = load_served(copy, backend="hnsw", recall=0.9)
    assert third.hnsw["target_recall"] == 0.9 and third.hnsw["ef_search"] <= first.hnsw["ef_search"]
    assert third.hnsw["build_seconds"] == first.hnsw["build_seconds"]
    # a graph of other content is never used
    import dehub

    other = dehub.Index.build(
        np.asarray(dehub.Index.load(copy).model.gallery_)[::-1].copy(),
        held_out,
        method="nnn",
        k=16,
        alpha=0.8,
    )
    other.save(copy)
    fourth = load_served(copy, backend="hnsw")
    assert fourth.hnsw["build_seconds"] != first.hnsw["build_seconds"] or gpath.stat().st_mtime_ns != stamp[0]


def test_auto_does_not_take_a_graph_below_the_recall_floor(planted, tmp_path, monkeypatch):
    """--backend auto serves exact where the tuned graph misses the target; --backend hnsw obeys."""
    import shutil

    import dehub.export.hnsw as hnsw

    path, _, _ = planted
    copy = tmp_path / "floor.dehub"
    shutil.copy(path, copy)
    monkeypatch.setattr(hnsw, "_EF_LADDER", (16,))  # a search too shallow to reach 0.99 here
    served = load_served(copy, backend="auto", hnsw_threshold=100)
    assert served.backend.name == "exact" and served.hnsw["used"] is False
    assert served.hnsw["recall"] < 0.99 == served.hnsw["target_recall"]
    forced = load_served(copy, backend="hnsw")
    assert forced.backend.name == "hnsw" and forced.hnsw["used"] is True


def test_info_and_metrics_show_ef_search_and_recall(planted):
    path, _, _ = planted
    with TestClient(create_app(Settings(source=str(path), backend="hnsw"))) as c:
        info = c.get("/info").json()
        metrics = c.get("/metrics").text
    assert info["backend"] == "hnsw"
    h = info["hnsw"]
    assert h["ef_search"] >= 10 and h["recall"] >= h["target_recall"] == 0.99
    assert f"dehub_hnsw_ef_search {float(h['ef_search'])}" in metrics
    assert f"dehub_hnsw_recall_at_10 {float(h['recall'])}" in metrics


def test_bounded_load_on_the_hnsw_backend_has_zero_errors(planted):
    from serve_helpers import ServerProcess

    path, index, held_out = planted
    srv = ServerProcess([str(path), "--backend", "hnsw"])
    n_requests, clients, time_limit = 300, 8, 120.0
    local = threading.local()
    t0 = time.monotonic()

    def one(i: int) -> tuple[int, list[int]]:
        if time.monotonic() - t0 > time_limit:
            return -1, []
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=srv.url, timeout=60)
        r = local.client.post(
            "/search", json={"vectors": [held_out[i].tolist()], "k": 10, "compare": i % 4 == 0}
        )
        return r.status_code, r.json()["results"][0]["ids"] if r.status_code == 200 else []

    try:
        with ThreadPoolExecutor(clients) as pool:
            out = list(pool.map(one, range(n_requests)))
        info = httpx.get(srv.url + "/info", timeout=30).json()
    finally:
        log = srv.stop()
    assert [s for s, _ in out].count(200) == n_requests, {s for s, _ in out}
    assert info["backend"] == "hnsw" and "Traceback" not in log
    _, exact = index.search(held_out[:n_requests], 10)
    assert recall_at(np.asarray([ids for _, ids in out]), exact) >= 0.98


def test_dehub_export_to_hnsw_builds_the_graph_that_serve_reuses(planted, tmp_path, monkeypatch, capsys):
    """``dehub export INDEX --to hnsw`` builds the serving graph ahead; the server reuses it."""
    import shutil

    import dehub.export.hnsw as hnsw
    from dehub.cli import main

    path, _, held_out = planted
    copy = tmp_path / "ahead.dehub"
    shutil.copy(path, copy)
    gpath, jpath = graph_paths(copy)
    assert (
        main(["export", str(copy), "--to", "hnsw", str(gpath), "--hnsw-m", "16", "--ef-construction", "40"])
        == 0
    )
    out = capsys.readouterr().out
    assert f"wrote {gpath}" in out and "reuses it" in out
    stamp = (gpath.stat().st_mtime_ns, jpath.stat().st_mtime_ns)

    def no_build(*_args, **_kwargs):
        raise AssertionError("the server rebuilt a graph that dehub export had built")

    monkeypatch.setattr(hnsw, "build_graph", no_build)
    served = load_served(copy, backend="hnsw", recall=0.99)
    assert served.backend.name == "hnsw"
    assert (served.hnsw["M"], served.hnsw["ef_construction"]) == (16, 40)  # export's construction
    assert (gpath.stat().st_mtime_ns, jpath.stat().st_mtime_ns) == stamp  # not rewritten
    assert served.hnsw["recall"] >= 0.99
    # another PATH is refused with a clear message (the graph must sit where the server looks)
    assert main(["export", str(copy), "--to", "hnsw", str(tmp_path / "elsewhere.hnsw")]) != 0
    err = capsys.readouterr()
    assert "next to the index" in err.out + err.err and "Traceback" not in err.out + err.err
