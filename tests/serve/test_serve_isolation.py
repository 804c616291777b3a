"""One bad request never fails another; the server tells the truth about its index.

Real ``dehub serve`` processes on 127.0.0.1 (each binds port 0 itself and prints the
port), bounded in requests and time; conditions are waited for with generous deadlines,
never timed.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from serve_helpers import DIM, ServerProcess, build_index

from dehub.serve.batching import Batcher

TOKEN = "isolation-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _hostile_bodies(queries: np.ndarray) -> list[dict]:
    """20 requests that must each get their own 4xx (valid JSON, wrong content)."""
    q = queries[0].tolist()
    huge = [1e20] + q[1:]
    out: list[dict] = [
        {"vectors": [huge]},
        {"vectors": [[3e38] * DIM]},
        {"vectors": [[-3e38] + q[1:]]},
        {"vectors": [[1.7e308] + q[1:]]},
        {"vectors": [q, [1e20] * DIM]},  # one bad row in a batch of two
        {"vectors": [q[:-1]]},  # wrong dimension
        {"vectors": [q + [0.5]]},
        {"vectors": []},
        {"vectors": [q], "k": 0},
        {"vectors": [q], "k": 10**9},
        {"vectors": [q], "k": -3},
        {"vectors": [q], "text": ["both"]},
        {},
        {"text": ["no encoder on this index"]},
        {"vectors": [[1e16] * DIM]},
        {"vectors": [[2e19, -2e19] + q[2:]]},
        {"vectors": [q], "k": 10, "compare": True, "surprise": 1},
        {"vectors": [[float(i) for i in range(DIM)] * 2]},
        {"vectors": [[1e300] * DIM], "compare": True},
        {"vectors": [[9e37] * DIM], "k": 5},
    ]
    assert len(out) == 20
    return out


def test_merged_batch_failure_reruns_members_one_by_one(index, queries):
    """If a merged engine call fails, each member is re-run alone: only the poisoned one fails."""
    from dehub.serve.backends import ExactBackend

    exact = ExactBackend(index)

    class Poisoned:
        name = "poisoned"

        def search(self, q, k, *, corrected=True):
            if (q[:, 0] == 123.0).any():
                raise ValueError("poisoned row")
            return exact.search(q, k, corrected=corrected)

    backend = Poisoned()
    batcher = Batcher(enabled=True, max_rows=256)
    bad = queries[:1].copy()
    bad[0, 0] = 123.0
    jobs = [queries[i : i + 1] for i in range(20)]
    jobs.insert(7, bad)

    async def main():
        return await asyncio.gather(
            *(batcher.search(backend, q, 5, True) for q in jobs), return_exceptions=True
        )

    try:
        out = asyncio.run(main())
    finally:
        batcher.close()
    failed = [i for i, r in enumerate(out) if isinstance(r, Exception)]
    assert failed == [7]
    for i, r in enumerate(out):
        if i != 7:
            np.testing.assert_array_equal(r[1], exact.search(jobs[i], 5)[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tmp_path_factory.mktemp("isolation") / "iso.dehub"
    build_index(path)
    srv = ServerProcess([str(path), "--token", TOKEN, "--body-timeout", "2", "--log-level", "info"])
    srv.path = path  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def test_400_valid_and_20_hostile_requests_concurrently(server, queries, index):
    """Exactly the 20 hostile requests fail, each with its own 4xx; no traceback in the log."""
    hostile = _hostile_bodies(queries)
    jobs: list[tuple[bool, dict]] = [
        (True, {"vectors": [queries[i % len(queries)].tolist()], "k": 10}) for i in range(400)
    ]
    for j, body in enumerate(hostile):  # spread among the valid ones
        jobs.insert(10 + j * 20, (False, body))
    _, want = index.search(queries, 10)
    local = threading.local()
    t0 = time.monotonic()

    def one(job: tuple[bool, dict]) -> tuple[bool, int, dict]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=server.url, headers=AUTH, timeout=60)
        valid, body = job
        r = local.client.post(
            "/search", content=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        return valid, r.status_code, r.json()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, jobs))
    assert time.monotonic() - t0 < 300
    bad = [(status, body) for valid, status, body in results if not valid]
    good = [(status, body) for valid, status, body in results if valid]
    assert len(bad) == 20 and all(400 <= s < 500 for s, _ in bad), [s for s, _ in bad]
    assert all(set(b) == {"error", "expected", "received"} for _, b in bad)
    assert all(s == 200 for s, _ in good), {s for s, _ in good}
    for i, (_, body) in enumerate(good):
        assert body["results"][0]["ids"] == want[i % len(queries)].tolist()
    metrics = httpx.get(server.url + "/metrics", headers=AUTH, timeout=30).text
    assert 'kind="server"' not in metrics
    log = server.output()
    assert "Traceback" not in log and "Exception" not in log, log[-3000:]


def test_partial_body_times_out_with_408(server, queries):
    """A client that sends half a body and stalls gets 408 after --body-timeout (2 s), not a hang."""
    body = json.dumps({"vectors": [queries[0].tolist()]}).encode()
    head = (
        f"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as s:
        s.sendall(head + body[: len(body) // 2])
        t0 = time.monotonic()
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert time.monotonic() - t0 >= 1.5  # it waited for the body first
    # the server still answers everyone else
    r = httpx.post(server.url + "/search", json={"vectors": [queries[0].tolist()]}, headers=AUTH, timeout=60)
    assert r.status_code == 200


def test_truncated_index_turns_health_and_search_to_503_until_reload(tmp_path, queries):
    path = tmp_path / "trunc.dehub"
    build_index(path)
    srv = ServerProcess([str(path), "--token", TOKEN])
    try:
        body = {"vectors": queries[:2].tolist(), "k": 5}
        assert httpx.post(srv.url + "/search", json=body, headers=AUTH, timeout=60).status_code == 200
        size = path.stat().st_size
        with open(path, "r+b") as f:  # truncated in place under the memory-mapped index
            f.truncate(size // 2)
        health = httpx.get(srv.url + "/health", timeout=60)
        assert health.status_code == 503 and "truncated" in health.json()["received"], health.text
        for _ in range(3):
            r = httpx.post(srv.url + "/search", json=body, headers=AUTH, timeout=60)
            assert r.status_code == 503 and set(r.json()) == {"error", "expected", "received"}, r.text
        r = httpx.post(srv.url + "/admin/reload", headers=AUTH, timeout=120)
        assert r.status_code == 409  # the truncated file cannot be loaded: still unavailable
        assert httpx.get(srv.url + "/health", timeout=60).status_code == 503
        build_index(path)  # a good file again (written to a temp file, renamed over)
        r = httpx.post(srv.url + "/admin/reload", headers=AUTH, timeout=120)
        assert r.status_code == 200 and r.json()["version"] == 2, r.text
        assert httpx.get(srv.url + "/health", timeout=60).json() == {"status": "ok", "version": 2}
        assert httpx.post(srv.url + "/search", json=body, headers=AUTH, timeout=60).status_code == 200
    finally:
        log = srv.stop()
    assert srv.proc.returncode is not None and srv.proc.returncode != -7, log  # no SIGBUS
    assert "Traceback" not in log, log[-3000:]


def test_two_servers_at_once_each_bind_their_own_port(tmp_path, queries):
    """Two servers started together bind port 0 themselves: different ports, both answer."""
    paths = [tmp_path / "a.dehub", tmp_path / "b.dehub"]
    for p, alpha in zip(paths, (0.0, 1.5), strict=True):
        build_index(p, alpha=alpha)
    with ThreadPoolExecutor(2) as pool:
        servers = list(pool.map(lambda p: ServerProcess([str(p)]), paths))
    try:
        assert servers[0].port != servers[1].port and 0 not in (servers[0].port, servers[1].port)
        answers = [
            httpx.post(s.url + "/search", json={"vectors": queries[:5].tolist(), "k": 10}, timeout=60).json()
            for s in servers
        ]
        assert answers[0]["results"] != answers[1]["results"]  # each is its own index
        for s in servers:
            conns = [c for c in _listening(s.proc.pid) if c[1] == s.port]
            assert conns and all(addr == "127.0.0.1" for addr, _ in conns), conns
    finally:
        for s in servers:
            s.stop()


def _listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets ``pid`` listens on (from /proc; empty elsewhere)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        rows = open("/proc/net/tcp").read().splitlines()[1:] + open("/proc/net/tcp6").read().splitlines()[1:]
    except OSError:
        return []
    out = []
    for row in rows:
        f = row.split()
        if f[3] == "0A" and f[9] in inodes:  # LISTEN
            hexaddr, hexport = f[1].split(":")
            addr = socket.inet_ntoa(bytes.fromhex(hexaddr)[::-1]) if len(hexaddr) == 8 else "ipv6"
            out.append((addr, int(hexport, 16)))
    return out


def test_no_traceback_for_a_nan_body(server):
    """JSON with NaN (Python's json accepts it) is refused as not finite, 422."""
    raw = '{"vectors": [[NaN' + ", 0.1" * (DIM - 1) + "]]}"
    r = httpx.post(
        server.url + "/search", content=raw, headers={**AUTH, "Content-Type": "application/json"}, timeout=60
    )
    assert r.status_code == 422 and "finite" in r.json()["error"], r.text
    assert "Traceback" not in server.output()
