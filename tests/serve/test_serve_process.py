"""A real ``dehub serve`` process on a free 127.0.0.1 port: results, token, hot swap, load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_helpers import DIM, ServerProcess, build_index

TOKEN = "process-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tmp_path_factory.mktemp("proc") / "live.dehub"
    build_index(path, alpha=0.75)
    srv = ServerProcess([str(path)], env={"DEHUB_TOKEN": TOKEN})
    srv.path = path  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def test_results_over_http_equal_index_search(server, queries):
    import dehub

    index = dehub.Index.load(server.path)
    scores, ids = index.search(queries, 10)
    r = httpx.post(
        server.url + "/search", json={"vectors": queries.tolist(), "k": 10}, headers=AUTH, timeout=30
    )
    assert r.status_code == 200
    for qi, entry in enumerate(r.json()["results"]):
        assert entry["ids"] == ids[qi].tolist()
        np.testing.assert_allclose(entry["scores"], scores[qi], atol=1e-6)


def test_token_from_the_environment_is_enforced(server, queries):
    body = {"vectors": queries[:1].tolist()}
    r = httpx.post(server.url + "/search", json=body, timeout=120)
    assert r.status_code == 401 and set(r.json()) == {"error", "expected", "received"}
    assert (
        httpx.post(
            server.url + "/search", json=body, headers={"Authorization": "Bearer no"}, timeout=10
        ).status_code
        == 401
    )
    assert httpx.get(server.url + "/health", timeout=120).status_code == 200


def _expected(path: Path, queries: np.ndarray, k: int) -> list[list[int]]:
    import dehub

    return dehub.Index.load(path).search(queries, k)[1].tolist()


def test_hot_swap_under_a_stream_of_requests_loses_none(tmp_path, queries):
    path = tmp_path / "swap.dehub"
    alphas = [0.0, 1.5, 0.0, 1.5, 0.0]  # alternate between two clearly different rankings
    build_index(path, alpha=alphas[0])
    want = {a: _expected(path, queries, 10) for a in (alphas[0],)}
    other = tmp_path / "other.dehub"
    build_index(other, alpha=alphas[1])
    want[alphas[1]] = _expected(other, queries, 10)
    assert want[0.0] != want[1.5]
    srv = ServerProcess([str(path), "--token", TOKEN])
    stop = threading.Event()
    results: list[tuple[int, int, list]] = []  # (status, version, ids)
    errors: list[str] = []

    def client(worker: int) -> None:
        with httpx.Client(base_url=srv.url, headers=AUTH, timeout=30) as c:
            i = worker
            while not stop.is_set():
                q = queries[i % len(queries) : i % len(queries) + 1]
                try:
                    r = c.post("/search", json={"vectors": q.tolist(), "k": 10})
                    body = r.json()
                    results.append(
                        (
                            r.status_code,
                            body.get("version", -1),
                            [i % len(queries), body["results"][0]["ids"]],
                        )
                    )
                except Exception as exc:
                    errors.append(repr(exc))
                i += 4

    try:
        threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        for n, alpha in enumerate(alphas[1:], start=2):
            build_index(path, alpha=alpha)  # Index.save writes atomically
            if n % 2 == 0:
                r = httpx.post(srv.url + "/admin/reload", headers=AUTH, timeout=60)
                assert r.status_code == 200 and r.json()["version"] == n, r.text
            else:
                srv.proc.send_signal(signal.SIGHUP)
                deadline = time.monotonic() + 600  # only catches a hang: a busy machine is slow
                while httpx.get(srv.url + "/health", timeout=60).json()["version"] != n:
                    assert time.monotonic() < deadline, "SIGHUP did not reload"
                    time.sleep(0.05)
            time.sleep(0.4)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        stop.set()
        srv.stop()
    assert not errors, errors[:3]
    assert len(results) > 50
    assert all(status == 200 for status, _, _ in results)
    versions = {v for _, v, _ in results}
    assert versions >= {1, 5}, versions
    for _, version, (qi, ids) in results:  # each answer is exactly its version's answer
        assert ids == want[alphas[version - 1]][qi]


def test_bounded_load_test_has_zero_errors(server, queries):
    n_requests, clients, time_limit = 400, 8, 60.0
    t0 = time.monotonic()
    local = threading.local()

    def one(i: int) -> int:
        if time.monotonic() - t0 > time_limit:
            return -1
        if not hasattr(local, "client"):  # one keep-alive connection per client thread
            local.client = httpx.Client(base_url=server.url, headers=AUTH, timeout=30)
        q = queries[i % len(queries) : i % len(queries) + 1]
        r = local.client.post("/search", json={"vectors": q.tolist(), "k": 10, "compare": i % 3 == 0})
        return r.status_code

    with ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(one, range(n_requests)))
    elapsed = time.monotonic() - t0
    assert elapsed < time_limit + 30
    assert statuses.count(200) == n_requests, {s: statuses.count(s) for s in set(statuses)}
    metrics = httpx.get(server.url + "/metrics", headers=AUTH, timeout=120).text
    assert 'dehub_errors_total{route="/search",kind="server"}' not in metrics


def test_cli_mistakes_are_one_line_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    cmd = [sys.executable, "-m", "dehub.cli", "serve"]
    r = subprocess.run(
        [*cmd, str(tmp_path / "missing.dehub")], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 2 and "index file not found" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.dehub"
    bad.write_bytes(b"garbage")
    r = subprocess.run([*cmd, str(bad), "--port", "0"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr


@pytest.mark.slow
def test_demo_server_answers_text_queries(demo_server):
    pytest.importorskip("sentence_transformers")
    r = httpx.post(
        demo_server.url + "/search",
        json={"text": ["a large body of salt water"], "k": 5, "compare": True},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    entry = r.json()["results"][0]
    assert len(entry["ids"]) == 5 and len(entry["plain"]["ids"]) == 5
    info = httpx.get(demo_server.url + "/info", timeout=120).json()
    assert info["name"] == "wordnet-demo" and info["text_encoder"].endswith("all-MiniLM-L6-v2")
    assert DIM != info["dim"] == 384
