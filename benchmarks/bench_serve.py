"""Benchmark ``dehub serve`` over loopback: q/s, p50, p99, errors, recall@10, RSS.

Configurations (synthetic clustered unit vectors, d=384, one query per request, k=10):

* ``100k``: a 100,000-item index on the exact engine (batching on and off);
* ``1m``: a 1,000,000-item index on the HNSW backend (d+2 graph, efSearch tuned to
  recall@10 0.99 on probe queries; the graph is built once and saved next to the index);

each corrected (NNN) and plain (``method="plain"``, same gallery, same backend), with 1
and 16 concurrent clients; ``--workers 2`` adds the corrected index served by two
processes. Queries are drawn from the gallery's distribution (fresh noise, never tuned
on); recall@10 is against dehub's exact top-10 of the same index. Each server is a real
``dehub serve`` process on 127.0.0.1 (it binds port 0 and prints its port); the clients
are asyncio coroutines in this process speaking raw HTTP/1.1 keep-alive, and the CPU
they used is reported (``load_generator_cores``) so it is clear how much of the 2 cores
the server had.

Run (index and graph building untimed, outside the lock; the timed part inside)::

    python benchmarks/bench_serve.py --sizes 100k,1m --build-only --workdir /tmp/bs
    python benchmarks/bench_serve.py --prepare-graph 1m --workdir /tmp/bs
    flock /tmp/dehub-bench.lock python benchmarks/bench_serve.py --sizes 100k --workdir /tmp/bs
    flock /tmp/dehub-bench.lock python benchmarks/bench_serve.py --sizes 1m --workers 2 --workdir /tmp/bs
    python benchmarks/bench_serve.py --table benchmarks/results/bench_serve_{100k,1m}.json

``--compare-forms 100k`` compares the d+1 (inner product) and d+2 (equal-norm L2) graphs.
Results: ``benchmarks/results/bench_serve_<size>.json`` (CPU, load, every figure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
D = 384
K = 10
N_REFERENCE = 2_000
CHUNK = 50_000


def machine() -> dict:
    """CPU model, caches, bf16 flags, load and versions (dehub.engine.hardware.describe_machine)."""
    from dehub.engine.hardware import describe_machine

    return describe_machine()


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def unit_chunk(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, D), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_gallery(path: Path, n: int, seed: int) -> np.ndarray:
    """A unit-norm float32 gallery with some structure (clustered, so hubs exist), in chunks."""
    rng = np.random.default_rng(seed)
    centers = unit_chunk(rng, 256)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, D))
    for s in range(0, n, CHUNK):
        m = min(CHUNK, n - s)
        x = centers[rng.integers(0, 256, m)] + 0.9 * unit_chunk(rng, m)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        arr[s : s + m] = x
    arr.flush()
    return np.load(path, mmap_mode="r")


class LowDim:
    """A realistic embedding-like distribution with low intrinsic dimension and planted hubs.

    Not tuned on: chosen once, before any graph was built on it. Real sentence
    embeddings share a large common direction (a non-zero mean, the source of hubs), sit
    near a low-dimensional subspace with a decaying spectrum and form clusters of very
    unequal size. Here: ``LATENT`` = 32 latent dimensions, 2,000 clusters with Zipf
    sizes, a random 384 x 32 map with singular values ``i ** -0.5``, a common mean
    direction, isotropic noise of 0.03 per dimension, and 0.1 % of the items planted as
    hubs (pulled halfway to the mean direction); rows normalized to unit length.
    """

    LATENT = 32
    CLUSTERS = 2_000

    def __init__(self, seed: int = 11) -> None:
        rng = np.random.default_rng(seed)
        basis, _ = np.linalg.qr(rng.standard_normal((D, self.LATENT)))
        self.W = (basis * (np.arange(1, self.LATENT + 1) ** -0.5)).astype(np.float32)
        self.mean = rng.standard_normal(D).astype(np.float32)
        self.mean *= 0.35 / np.linalg.norm(self.mean)
        self.centers = rng.standard_normal((self.CLUSTERS, self.LATENT)).astype(np.float32) * 1.2
        w = 1.0 / np.arange(1, self.CLUSTERS + 1) ** 1.1
        self.weights = w / w.sum()
        self.spread = rng.uniform(0.2, 0.7, self.CLUSTERS).astype(np.float32)

    def sample(self, rng: np.random.Generator, m: int, hubs: float = 0.0) -> np.ndarray:
        c = rng.choice(self.CLUSTERS, size=m, p=self.weights)
        z = self.centers[c] + self.spread[c, None] * rng.standard_normal((m, self.LATENT), dtype=np.float32)
        x = z @ self.W.T + self.mean + 0.03 * rng.standard_normal((m, D), dtype=np.float32)
        if hubs:
            h = rng.random(m) < hubs
            x[h] = (
                0.5 * x[h]
                + 0.5 * (self.mean / np.linalg.norm(self.mean)) * np.linalg.norm(x[h], axis=1)[:, None]
            )
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32)


def make_lowdim_gallery(path: Path, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dist = LowDim()
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, D))
    for s in range(0, n, CHUNK):
        m = min(CHUNK, n - s)
        arr[s : s + m] = dist.sample(rng, m, hubs=0.001)
    arr.flush()
    return np.load(path, mmap_mode="r")


def build_indexes(workdir: Path, n: int, data: str = "clustered") -> dict[str, Path]:
    """The NNN and the plain index over one synthetic gallery (reused when already there).

    ``data="clustered"``: 256 centers plus noise of the same size in 384 dimensions (near
    isotropic: intrinsic dimension ~384), no reference kept. ``data="lowdim"``: the
    :class:`LowDim` distribution, the reference queries kept in the index (``--keep-reference``),
    so the server tunes efSearch on real queries. Files of ``lowdim`` go to ``workdir/lowdim``.
    """
    import dehub

    if data == "lowdim":
        workdir = workdir / "lowdim"
        workdir.mkdir(parents=True, exist_ok=True)
    out = {"corrected": workdir / f"nnn_{n}.dehub", "plain": workdir / f"plain_{n}.dehub"}
    if all(p.exists() for p in out.values()):
        return out
    if data == "lowdim":
        gallery = make_lowdim_gallery(workdir / f"gallery_{n}.npy", n, seed=12)
        reference = LowDim().sample(np.random.default_rng(13), N_REFERENCE)
        nnn = dehub.NNN(k=16, alpha=0.75).fit(gallery, reference, normalize="none", progress=True)
        dehub.Index(nnn, reference=reference).save(out["corrected"])
        plain = dehub.Plain().fit(gallery, reference, normalize="none")
        dehub.Index(plain).save(out["plain"])
        return out
    gallery = make_gallery(workdir / f"gallery_{n}.npy", n, seed=1)
    rng = np.random.default_rng(2)
    centers = unit_chunk(np.random.default_rng(1), 256)  # the same centers as the gallery
    reference = centers[rng.integers(0, 256, N_REFERENCE)] + 0.9 * unit_chunk(rng, N_REFERENCE)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    nnn = dehub.NNN(k=16, alpha=0.75).fit(gallery, reference, normalize="none", progress=True)
    dehub.Index(nnn).save(out["corrected"])
    plain = dehub.Plain().fit(gallery, reference, normalize="none")
    dehub.Index(plain).save(out["plain"])
    return out


class Server:
    """A real ``dehub serve`` process on 127.0.0.1; it binds port 0 and prints the port it got."""

    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dehub.cli", "serve", *args, "--host", "127.0.0.1", "--port", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        ports: queue.Queue[int] = queue.Queue()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
                if m:
                    ports.put(int(m.group(1)))
            ports.put(0)

        threading.Thread(target=read, daemon=True).start()
        self.port = ports.get(timeout=3600)  # a first start may build an HNSW graph
        if not self.port:
            raise RuntimeError("".join(self.lines))
        import httpx

        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
            if time.perf_counter() - t0 > 3600:
                raise RuntimeError("server did not start in 3600 s")
        self.startup_s = time.perf_counter() - t0
        self.info = httpx.get(f"http://127.0.0.1:{self.port}/info", timeout=30).json()

    def rss_mib(self) -> dict:
        """Peak RSS (VmHWM) of the server and of each worker process, and their PSS now
        (proportional set size: shared mapped pages counted once across the processes)."""
        pids = [self.proc.pid] + _children(self.proc.pid)
        out = {"peak_rss_mib": [], "pss_mib_total": 0.0}
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        out["peak_rss_mib"].append(round(int(line.split()[1]) / 1024, 1))
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        out["pss_mib_total"] += int(line.split()[1]) / 1024
            except OSError:
                pass
        out["pss_mib_total"] = round(out["pss_mib_total"], 1)
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def request_bytes(port: int, q: np.ndarray) -> bytes:
    body = json.dumps({"vectors": [np.round(q, 6).tolist()], "k": K}).encode()
    head = (
        f"POST /search HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def _one_client(
    port: int,
    reqs: list[tuple[int, bytes]],
    lat: list[float],
    errors: list[str],
    answers: list,
    deadline: float = float("inf"),
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for qi, r in reqs:
            t0 = time.perf_counter()
            if t0 > deadline:
                break  # the time limit: stop sending (what was sent is counted)
            writer.write(r)
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if b" 200 " not in status_line:
                errors.append(status_line.decode(errors="replace").strip())
            else:
                answers.append((qi, body))
    except (OSError, asyncio.IncompleteReadError) as exc:
        errors.append(repr(exc))
    finally:
        writer.close()


def run_load(
    port: int,
    queries: np.ndarray,
    clients: int,
    n_requests: int,
    time_limit: float = 30.0,
    truth: np.ndarray | None = None,
) -> dict:
    """``clients`` keep-alive clients; q/s, p50, p99, errors, recall@10 against ``truth``
    (exact corrected ids per query) and the CPU cores the load generator itself used."""
    reqs = [(i % len(queries), request_bytes(port, queries[i % len(queries)])) for i in range(n_requests)]
    per = [reqs[c::clients] for c in range(clients)]
    lat: list[float] = []
    errors: list[str] = []
    answers: list[bytes] = []

    async def main() -> float:
        # warm-up: a few requests, not counted
        await _one_client(port, reqs[: min(8, len(reqs))], [], [], [])
        t0 = time.perf_counter()
        deadline = t0 + time_limit
        await asyncio.gather(*(_one_client(port, p, lat, errors, answers, deadline) for p in per))
        return time.perf_counter() - t0

    cpu0 = time.process_time()
    elapsed = asyncio.run(main())
    client_cores = (time.process_time() - cpu0) / elapsed
    lat_ms = np.asarray(lat) * 1e3
    recall = None
    if truth is not None and answers:
        hits = 0
        for qi, body in answers:
            got = json.loads(body)["results"][0]["ids"]
            hits += len(set(got) & set(truth[qi].tolist()))
        recall = round(hits / (K * len(answers)), 4)
    return {
        "recall_at_10": recall,
        "load_generator_cores": round(client_cores, 2),
        "clients": clients,
        "requests": len(lat),
        "requests_planned": n_requests,
        "time_limit_s": time_limit,
        "seconds": round(elapsed, 3),
        "qps": round(len(lat) / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat_ms, 99)), 2) if len(lat) else None,
        "errors": len(errors),
        "error_samples": errors[:3],
    }


def exact_truth(path: Path, queries: np.ndarray) -> np.ndarray:
    """Exact top-10 ids of ``queries`` under the index's own ranking (dehub's engine)."""
    import dehub

    index = dehub.Index.load(path, mmap=True)
    return np.asarray(index.search(queries, K)[1])


def bench_size(
    size: str,
    workdir: Path,
    requests_1: int,
    requests_16: int,
    workers: int = 1,
    data: str = "clustered",
    hnsw_only: bool = False,
) -> dict:
    """Corrected (NNN) and plain indexes at ``size``: the exact engine at 100k; at 1M the
    HNSW backend at two recall targets (0.99, 0.9), with ``workers`` processes, and the
    exact engine, corrected and plain (the plain 1M index has no graph: building one
    takes ~36 min of the two busy cores)."""
    n = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}[size]  # 10k: a quick check of the script
    print(f"[{size}] indexes ({n} items, d={D}) ...", flush=True)
    files = build_indexes(workdir, n, data)
    queries = held_out_queries(512, data)
    # (ranking, backend, recall target, batching, workers)
    configs: list[tuple[str, str, float, bool, int]]
    if size == "1m" and hnsw_only:  # the saved graph at its stored target: no re-tuning, no exact runs
        configs = [("corrected", "hnsw", 0.99, True, 1)]
    elif size == "1m":
        configs = [("corrected", "hnsw", 0.99, True, 1), ("corrected", "hnsw", 0.9, True, 1)]
        if workers > 1:
            configs.append(("corrected", "hnsw", 0.9, True, workers))
        configs += [("corrected", "exact", 0.99, True, 1), ("plain", "exact", 0.99, True, 1)]
    else:
        configs = [("corrected", "exact", 0.99, True, 1), ("plain", "exact", 0.99, True, 1)]
        configs.append(("corrected", "exact", 0.99, False, 1))
        if workers > 1:
            configs.append(("corrected", "exact", 0.99, True, workers))
    truths = {kind: exact_truth(files[kind], queries) for kind in {c[0] for c in configs}}
    runs = []
    for kind, backend, recall, batching, n_workers in configs:
        args = [str(files[kind]), "--backend", backend, "--recall", str(recall), "--workers", str(n_workers)]
        args += [] if batching else ["--no-batching"]
        srv = Server(args)
        try:
            for clients, nreq in ((1, requests_1), (16, requests_16)):
                if clients == 1 and (not batching or n_workers > 1):
                    continue  # batching and workers change nothing for one client
                res = run_load(srv.port, queries, clients, nreq, truth=truths[kind])
                res.update(
                    {
                        "size": size,
                        "backend": backend,
                        "index": kind,
                        "batching": batching,
                        "workers": n_workers,
                    }
                )
                res["load"] = load()
                res["server_rss"] = srv.rss_mib()
                res["server_startup_s"] = round(srv.startup_s, 1)
                h = srv.info.get("hnsw")
                if backend == "hnsw" and h:
                    keys = ("form", "M", "ef_construction", "ef_search", "recall", "target_recall")
                    res["hnsw"] = {x: h[x] for x in (*keys, "probe_source", "build_seconds", "tune_seconds")}
                print(f"  {json.dumps(res)}", flush=True)
                runs.append(res)
        finally:
            srv.stop()
    return {
        "size": size,
        "n_items": n,
        "d": D,
        "k": K,
        "n_reference": N_REFERENCE,
        "data": data,
        "queries": "held_out_queries(512): the gallery's distribution, fresh noise, never tuned on",
        "runs": runs,
    }


def compare_forms(workdir: Path, n: int, n_held_out: int = 500, data: str = "clustered") -> dict:
    """d+1 (inner product) vs d+2 (equal norm, L2) HNSW graphs of one NNN index.

    Each graph is built with the same M / efConstruction, its efSearch tuned to recall@10
    0.99 on gallery-row probes (what the server does for an index without reference
    queries); then both are measured on held-out queries (not tuned on): recall@10 against
    the exact corrected top-10 and single-query latency at the tuned efSearch, the two
    forms alternated in rounds (median of per-round ratios).
    """
    import dehub
    from dehub.export.hnsw import build_tuned, exact_rows_function, index_fingerprint, recall_at

    files = build_indexes(workdir, n, data)
    index = dehub.Index.load(files["corrected"], mmap=True)
    header = dehub.Index.describe_file(files["corrected"])
    oracle = exact_rows_function(index)
    held = held_out_queries(512, data)[:n_held_out]
    truth = oracle(held, K)
    out: dict = {"n_items": n, "d": D, "load_before": load(), "forms": {}}
    backends = {}
    for form in ("d+1", "d+2"):
        be = build_tuned(
            index.model.gallery_, index.model.bias_, index.ids, index.reference, oracle,
            index_fingerprint(header), target=0.99, form=form, progress=True,
        )  # fmt: skip
        backends[form] = be
        rec = recall_at(be.search_rows(held, K)[1], truth)
        out["forms"][form] = {**be.info.to_json(), "held_out_recall_at_10": round(rec, 5)}
        print(f"  {form}: {json.dumps(out['forms'][form])}", flush=True)
    per_round = {f: [] for f in backends}
    for _ in range(5):
        for form, be in backends.items():
            t0 = time.perf_counter()
            for q in held[:200]:
                be.search_rows(q[None, :], K)
            per_round[form].append((time.perf_counter() - t0) / 200)
    ratios = [a / b for a, b in zip(per_round["d+1"], per_round["d+2"], strict=True)]
    for form in backends:
        out["forms"][form]["ms_per_query_median"] = round(1e3 * float(np.median(per_round[form])), 3)
    out["latency_ratio_d1_over_d2_median"] = round(float(np.median(ratios)), 3)
    out["load_after"] = load()
    out["machine"] = machine()
    return out


def prepare_graphs(
    workdir: Path, n: int, data: str = "clustered", kinds: tuple[str, ...] = ("corrected",)
) -> dict:
    """The HNSW graphs of the ``kinds`` indexes, saved next to them (reused by the server)."""
    import dehub
    from dehub.export.hnsw import graph_backend

    files = build_indexes(workdir, n, data)
    out: dict = {"n_items": n, "d": D, "data": data, "machine": machine(), "graphs": {}}
    for kind in kinds:
        started = load()
        t0 = time.perf_counter()
        index = dehub.Index.load(files[kind], mmap=True)
        header = dehub.Index.describe_file(files[kind])
        be = graph_backend(index, files[kind], header, target=0.99, progress=True, log=print)
        out["graphs"][kind] = {
            **be.info.to_json(),
            "wall_s": round(time.perf_counter() - t0, 1),
            "load_before": started,
            "load_after": load(),
        }
        print(json.dumps(out["graphs"][kind]), flush=True)
    return out


TEXTS = (
    "a large body of salt water",
    "a domesticated carnivorous mammal that barks",
    "the act of moving quickly on foot",
    "a building where books are kept for reading",
    "an instrument for measuring temperature",
    "a feeling of great happiness",
    "the season after summer",
    "a tool with a heavy head for driving nails",
)


def text_query_latency(workdir: Path, rounds: int = 5, per_round: int = 20) -> dict:
    """The demo page's text query (``{"text": [t], "k": 10, "compare": true, "details": true}``,
    one client, sequential) against the bundled WordNet demo, torch encoder vs ONNX encoder.

    Two servers run at once (both warmed); the rounds alternate them, so a burst of load
    hits both alike; p50 per round and the median of per-round ratios are reported.
    """
    import httpx

    from dehub.embed.encoders import export_onnx

    onnx_dir = workdir / "minilm-onnx"
    if not (onnx_dir / "model.onnx").is_file():
        export_onnx(onnx_dir)
    servers = {
        "torch": Server(["--text-encoder", "minilm", "--encoder", "torch"]),
        "onnx": Server(["--onnx-encoder", str(onnx_dir)]),
    }
    out: dict = {"load_before": load(), "rounds": []}
    try:
        clients = {
            name: httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=60)
            for name, srv in servers.items()
        }
        for name, c in clients.items():  # warm: the first requests of each server
            for t in TEXTS[:2]:
                c.post(
                    "/search", json={"text": [t], "k": 10, "compare": True, "details": True}
                ).raise_for_status()
        for r in range(rounds):
            row: dict = {"load": load()}
            for name, c in clients.items():
                lat = []
                for i in range(per_round):
                    body = {"text": [TEXTS[(i + r) % len(TEXTS)]], "k": 10, "compare": True, "details": True}
                    t0 = time.perf_counter()
                    c.post("/search", json=body).raise_for_status()
                    lat.append(time.perf_counter() - t0)
                row[f"{name}_p50_ms"] = round(1e3 * float(np.median(lat)), 2)
            row["runtimes"] = {n: srv.info.get("text_encoder_runtime") for n, srv in servers.items()}
            row["ratio_torch_over_onnx"] = round(row["torch_p50_ms"] / row["onnx_p50_ms"], 3)
            print(f"  {json.dumps(row)}", flush=True)
            out["rounds"].append(row)
        for c in clients.values():
            c.close()
    finally:
        for srv in servers.values():
            srv.stop()
    for name in servers:
        out[f"{name}_p50_ms_median"] = float(np.median([x[f"{name}_p50_ms"] for x in out["rounds"]]))
    out["ratio_torch_over_onnx_median"] = float(
        np.median([x["ratio_torch_over_onnx"] for x in out["rounds"]])
    )
    out["load_after"] = load()
    out["machine"] = machine()
    return out


def held_out_queries(m: int, data: str = "clustered") -> np.ndarray:
    """Queries from the gallery's distribution (same centers, fresh noise), never tuned on."""
    if data == "lowdim":
        return LowDim().sample(np.random.default_rng(14), m)
    rng = np.random.default_rng(3)
    centers = unit_chunk(np.random.default_rng(1), 256)
    q = centers[rng.integers(0, 256, m)] + 0.9 * unit_chunk(rng, m)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def table(paths: list[Path]) -> str:
    """A markdown table of result files (for docs/serve.md)."""
    rows = [
        "| index | backend | ranking | batching | workers | clients | q/s | p50 ms | p99 ms | errors | requests "
        "| recall@10 | server RSS MiB | load-generator cores | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in paths:
        res = json.loads(Path(path).read_text())
        for r in res["runs"]:
            load1 = (
                r["load"].split("load average:")[1].split(",")[0].strip()
                if "load average" in r["load"]
                else "?"
            )
            rss = r.get("server_rss", {})
            peak = "+".join(str(x) for x in rss.get("peak_rss_mib", [])) or "?"
            backend = r["backend"] + (f" ef={r['hnsw']['ef_search']}" if r.get("hnsw") else "")
            rows.append(
                f"| {r['size']} | {backend} | {r['index']} | {'on' if r['batching'] else 'off'} | {r.get('workers', 1)} "
                f"| {r['clients']} | {r['qps']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} | {r['requests']} "
                f"| {r.get('recall_at_10')} | {peak} | {r.get('load_generator_cores')} | {load1} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="100k", help="comma list of 10k, 100k, 1m")
    p.add_argument(
        "--workers", type=int, default=1, help="also run the corrected index with this many --workers"
    )
    p.add_argument("--requests-1", type=int, default=200, help="requests with 1 client")
    p.add_argument("--requests-16", type=int, default=1600, help="requests with 16 clients")
    p.add_argument("--workdir", help="where to put the index files (default: a temporary directory)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument(
        "--table", nargs="+", metavar="JSON", help="print a markdown table of result files and exit"
    )
    p.add_argument(
        "--build-only",
        action="store_true",
        help="only write the index files into --workdir (untimed; run it outside the benchmark lock)",
    )
    p.add_argument("--compare-forms", metavar="SIZE", help="d+1 vs d+2 HNSW graphs at SIZE (10k, 100k)")
    p.add_argument(
        "--prepare-graph",
        metavar="SIZE",
        help="build, tune and save the HNSW graph of the NNN and plain indexes at SIZE (untimed; what "
        "the server would do at its first start), then exit",
    )
    p.add_argument(
        "--data",
        choices=("clustered", "lowdim"),
        default="clustered",
        help="clustered: 256 centers + noise in 384 dimensions (near isotropic); lowdim: the LowDim "
        "distribution (32 latent dimensions, Zipf clusters, planted hubs, reference queries kept)",
    )
    p.add_argument(
        "--hnsw-only",
        action="store_true",
        help="1m: only the corrected index on its saved HNSW graph at recall target 0.99",
    )
    p.add_argument(
        "--text-query",
        action="store_true",
        help="the demo page's text query p50, torch vs ONNX encoder (alternated rounds), then exit",
    )
    args = p.parse_args(argv)
    if args.text_query:
        res = text_query_latency(Path(args.workdir or tempfile.mkdtemp(prefix="bench_serve_")))
        out = Path(args.out) / "bench_serve_text_query.json"
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {out}", flush=True)
        return 0
    tag = "" if args.data == "clustered" else f"_{args.data}"
    if args.prepare_graph:
        n = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}[args.prepare_graph]
        res = prepare_graphs(Path(args.workdir), n, args.data)
        out = Path(args.out) / f"bench_serve_graph_{args.prepare_graph}{tag}.json"
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {out}", flush=True)
        return 0
    if args.compare_forms:
        n = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}[args.compare_forms]
        res = compare_forms(Path(args.workdir or tempfile.mkdtemp(prefix="bench_serve_")), n, data=args.data)
        out = Path(args.out) / f"bench_serve_forms_{args.compare_forms}{tag}.json"
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {out}", flush=True)
        return 0
    if args.table:
        print(table([Path(t) for t in args.table]))
        return 0
    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_serve_")
        workdir = Path(tmp.name)
    try:
        if args.build_only:
            for size in args.sizes.split(","):
                build_indexes(workdir, {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}[size], args.data)
            return 0
        for size in args.sizes.split(","):
            started = load()
            t0 = time.perf_counter()
            res = bench_size(
                size,
                workdir,
                args.requests_1,
                args.requests_16,
                workers=args.workers,
                data=args.data,
                hnsw_only=args.hnsw_only,
            )
            res.update({"machine": machine(), "load_before": started, "load_after": load()})
            res["wall_s"] = round(time.perf_counter() - t0, 1)
            out = Path(args.out) / f"bench_serve_{size}{tag}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(res, indent=1) + "\n")
            print(f"wrote {out}", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
