"""The paper's 110-setting NNN validation sweep: dehub vs nnn-retrieval, same run, same data.

dehub (``dehub.evaluation.sweep``): ONE pass over the reference set for the largest k
(k = 512), every smaller k from the cumulative sums of the sorted top-k scores, every
alpha from the same means; the query-gallery product is computed once and each setting
only subtracts its bias and counts (exact first-relevant ranks, so R@1/5/10 and MRR).

nnn-retrieval (the authors' package): ``NNNRanker`` once per k (a reference pass each),
then ``search(queries, 10)`` once per alpha; R@1/5/10 computed from the returned ids.

Both produce the R@1/5/10 of all 110 settings; the script prints both wall times, the
speed-up (target >= 8x) and the largest R@1 disagreement between the two tables.

Full (COCO-like: 5,000 validation images, 25,000 captions, 100,000 reference captions,
d = 512):  python benchmarks/bench_sweep.py
Smoke:     python benchmarks/bench_sweep.py --small
Needs:     pip install nnn-retrieval (and torch, which it uses)
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # nnn-retrieval prints a bar per batch

import numpy as np

from dehub import Relevance
from dehub.datasets import RetrievalTask
from dehub.evaluation.metrics import evaluate_topk
from dehub.evaluation.sweep import sweep
from dehub.methods import NNN


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_data(n_gallery: int, per_item: int, n_reference: int, dim: int, seed: int):
    """Image-like gallery, caption-like queries (per_item noisy copies), reference captions."""
    rng = np.random.default_rng(seed)
    hub = unit(rng.normal(size=(1, dim)))
    base = rng.normal(size=(n_gallery, dim)) / np.sqrt(dim)
    gallery = unit(base + rng.uniform(0, 1.5, size=(n_gallery, 1)) * hub)
    owner = np.repeat(np.arange(n_gallery), per_item)
    queries = unit(base[owner] + 3.0 * rng.normal(size=(owner.size, dim)) / np.sqrt(dim) + 0.8 * hub)
    ref_base = rng.normal(size=(n_reference, dim)) / np.sqrt(dim)
    reference = unit(ref_base + 3.0 * rng.normal(size=ref_base.shape) / np.sqrt(dim) + 0.8 * hub)
    rel = Relevance.from_pairs(np.arange(owner.size), owner, owner.size, n_gallery)
    return RetrievalTask("t2i", queries, gallery, rel), reference


def run_dehub(task, reference, grid):
    t0 = time.perf_counter()
    res = sweep(NNN(), task, reference, grid=grid, ks=(1, 5, 10))
    seconds = time.perf_counter() - t0
    return seconds, {(row["k"], row["alpha"]): row["R@1"] for row in res.table}, res


def run_nnn_retrieval(task, reference, grid, batch_size: int):
    from nnn import NNNRanker, NNNRetriever

    t0 = time.perf_counter()
    table = {}
    gallery, queries = np.ascontiguousarray(task.gallery), np.ascontiguousarray(task.queries)
    for k in grid["k"]:
        retriever = NNNRetriever(gallery.shape[1])
        ranker = NNNRanker(
            retriever,
            gallery,
            reference,
            alternate_ks=k,
            batch_size=batch_size,
            alternate_weight=grid["alpha"][0],
        )
        for alpha in grid["alpha"]:
            ranker.alternate_weight = alpha
            _, ids = ranker.search(queries, 10)
            out = evaluate_topk(np.asarray(ids, dtype=np.int64), task.relevance, (1, 5, 10)).summary()
            table[(k, alpha)] = out["R@1"]
    return time.perf_counter() - t0, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="small smoke-test sizes")
    ap.add_argument("--gallery", type=int, help="validation gallery size (images)")
    ap.add_argument("--per-item", type=int, default=5, help="queries per gallery item (captions)")
    ap.add_argument("--reference", type=int, help="reference set size")
    ap.add_argument("--dim", type=int, help="embedding dimension")
    ap.add_argument("--batch-size", type=int, default=1024, help="nnn-retrieval batch size")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n_g = args.gallery or (1000 if args.small else 5000)
    n_r = args.reference or (20000 if args.small else 100000)
    dim = args.dim or (256 if args.small else 512)
    grid = NNN.default_grid()
    task, reference = make_data(n_g, args.per_item, n_r, dim, args.seed)
    print(
        f"data: gallery {n_g}, queries {task.queries.shape[0]}, reference {n_r}, d={dim}; "
        f"grid {len(grid['k'])} k x {len(grid['alpha'])} alpha = {len(grid['k']) * len(grid['alpha'])} settings"
    )
    t_dehub, tab_dehub, res = run_dehub(task, reference, grid)
    print(
        f"dehub sweep:          {t_dehub:8.2f} s  (chosen {res.best_params}, validation R@1 "
        f"{res.best_metrics['R@1']:.4f})"
    )
    t_ref, tab_ref = run_nnn_retrieval(task, reference, grid, args.batch_size)
    best_ref = max(tab_ref, key=lambda key: tab_ref[key])
    print(
        f"nnn-retrieval per k:  {t_ref:8.2f} s  (best k={best_ref[0]}, alpha={best_ref[1]}, "
        f"R@1 {tab_ref[best_ref]:.4f})"
    )
    diff = max(abs(tab_dehub[key] - tab_ref[key]) for key in tab_ref)
    print(
        f"speed-up: {t_ref / t_dehub:.1f}x (target >= 8x); largest R@1 difference between the "
        f"two tables: {diff:.2e}"
    )


if __name__ == "__main__":
    main()
