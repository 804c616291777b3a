"""Construction choices of the serving graph, measured on one index: recall@10 against the
exact corrected top-10 by efSearch, for

* the ``d+2`` graph of ``dehub serve`` (equal-norm augmented items, L2), and
* a *plain* inner-product graph over the gallery whose ``ef`` candidates are re-ranked by
  the exact corrected score ``q . r - b(r)`` (HNSW candidates k' > k re-ranked),

with the same M / efConstruction; 500 held-out queries of the index's distribution.

    python benchmarks/bench_serve_forms_rerank.py INDEX {clustered,lowdim} M EF_CONSTRUCTION

Results: ``benchmarks/results/bench_serve_forms_rerank_100k_lowdim.txt``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dehub
from bench_serve import held_out_queries
from dehub.engine import import_faiss
from dehub.export.hnsw import build_graph, recall_at


def main(path: str, data: str, M: int, efc: int) -> None:
    faiss = import_faiss()
    idx = dehub.Index.load(path, mmap=True)
    G = np.asarray(idx.model.gallery_)
    b = np.asarray(idx.model.bias_, np.float32)
    q = held_out_queries(500, data)
    truth = idx.model.search(q, 10, normalize="none")[1]
    t0 = time.perf_counter()
    g2, _ = build_graph(G, b, form="d+2", M=M, ef_construction=efc)
    res = {"d+2_build_s": round(time.perf_counter() - t0, 1)}
    t0 = time.perf_counter()
    gp = faiss.IndexHNSWFlat(G.shape[1], M, faiss.METRIC_INNER_PRODUCT)
    gp.hnsw.efConstruction = efc
    gp.add(G)
    res["plain_build_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res), flush=True)
    aug = np.hstack([q, -np.ones((len(q), 1), np.float32), np.zeros((len(q), 1), np.float32)])
    for ef in (32, 64, 128, 256, 512):
        p = faiss.SearchParametersHNSW(efSearch=ef)
        t0 = time.perf_counter()
        _, r2 = g2.search(aug, 10, params=p)
        t2 = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, cand = gp.search(q, ef, params=p)
        s = np.einsum("qkd,qd->qk", G[np.maximum(cand, 0)], q) - b[np.maximum(cand, 0)]
        s[cand < 0] = -np.inf
        top = np.take_along_axis(cand, np.argsort(-s, axis=1)[:, :10], axis=1)
        tp = time.perf_counter() - t0
        row = {
            "ef": ef,
            "d+2": round(recall_at(r2, truth), 4),
            "plain+rerank": round(recall_at(top, truth), 4),
            "d+2_ms_per_q": round(1e3 * t2 / len(q), 3),
            "plain_ms_per_q": round(1e3 * tp / len(q), 3),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
