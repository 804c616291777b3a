"""Serving cost of the exported d+1 / d+2 indexes vs the same FAISS index type on plain d vectors.

The NNN-corrected gallery is exported as ``[r, b(r)]`` (d+1, inner product; queries
``[q, -1]``) and as the equal-norm ``[r, b(r), sqrt(M^2 - |[r, b]|^2)]`` (d+2, L2;
queries ``[q, -1, 0]``) (``dehub.export``). This measures queries/second of those indexes
against the same index type built the same way on the plain ``r`` (uncorrected search),
for flat, IVF and HNSW; the ratio should be close to 1 (one or two extra dimensions out
of d). Also reports the overlap of each exported index's top-10 with dehub's exact
corrected top-10.

Full run::

    python benchmarks/bench_serving.py --gallery 200000 --queries 10000

Smoke run::

    python benchmarks/bench_serving.py --small
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dehub
from bench_approx import machine, make_paired
from dehub.export import augment_items, build_faiss_index, query_vectors


def qps(index, queries: np.ndarray, k: int, repeat: int) -> tuple[float, np.ndarray]:
    best, ids = np.inf, None
    index.search(queries[: min(200, queries.shape[0])], k)  # warm-up (page-in, thread pool)
    for _ in range(repeat):
        t = time.perf_counter()
        _, ids = index.search(queries, k)
        best = min(best, time.perf_counter() - t)
    return queries.shape[0] / best, ids


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gallery", type=int, default=200_000)
    p.add_argument("--reference", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--types", default="flat,ivf,hnsw")
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="FAISS OpenMP threads (default: all)")
    p.add_argument("--small", action="store_true", help="smoke run: gallery 5,000, 500 queries, d=128")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.small:
        args.gallery, args.reference, args.queries, args.dim = 5000, 5000, 500, 128
    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    data = make_paired(args.gallery, args.reference, args.dim, captions_per_image=1)
    g, r = data["gallery"], data["reference"]
    q = data["queries"][: args.queries]
    model = dehub.NNN(k=16, alpha=0.75, engine="auto").fit(g, r, normalize="none")
    exported = model.export_vectors()
    q_aug = model.augment_queries(q)
    _, exact_ids = model.search(q, args.top)
    print(f"machine: {machine()}; faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    print(f"gallery {g.shape}, queries {q.shape}, top {args.top}")
    out = {"machine": machine(), "args": vars(args), "types": {}}
    for kind in [t.strip() for t in args.types.split(",") if t.strip()]:
        plain_index = build_faiss_index(g, index_type=kind, nprobe=args.nprobe)
        corrected_index = build_faiss_index(exported, index_type=kind, nprobe=args.nprobe)
        qps_plain, _ = qps(plain_index, q, args.top, args.repeat)
        qps_corr, ids = qps(corrected_index, q_aug, args.top, args.repeat)
        overlap = float(np.mean((ids[:, :, None] == exact_ids[:, None, :]).any(axis=1)))
        del corrected_index
        d2_index = build_faiss_index(
            augment_items(model, "d+2").vectors, index_type=kind, metric="l2", nprobe=args.nprobe
        )
        qps_d2, ids2 = qps(d2_index, query_vectors(q, "d+2"), args.top, args.repeat)
        overlap2 = float(np.mean((ids2[:, :, None] == exact_ids[:, None, :]).any(axis=1)))
        del d2_index
        row = {
            "qps_plain_d": qps_plain,
            "qps_exported_d_plus_1": qps_corr,
            "ratio": qps_corr / qps_plain,
            "top_overlap_with_exact_corrected": overlap,
            "qps_exported_d_plus_2_l2": qps_d2,
            "ratio_d_plus_2": qps_d2 / qps_plain,
            "top_overlap_with_exact_corrected_d_plus_2": overlap2,
        }
        out["types"][kind] = row
        print(
            f"{kind:5s} plain d: {qps_plain:9.0f} q/s   d+1: {qps_corr:9.0f} q/s (ratio {row['ratio']:.3f}, "
            f"overlap {overlap:.3f})   d+2 L2: {qps_d2:9.0f} q/s (ratio {row['ratio_d_plus_2']:.3f}, "
            f"overlap {overlap2:.3f})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
