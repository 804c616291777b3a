"""What the IVF recall check costs and chooses with samples of 64, 128 and 256 queries.

One process, one index per data set; in every round each sample size runs once,
alternating: the check (:meth:`dehub.engine.ivf.IVFIndex.recall_check` does the default
size, one in 40 of the queries, 128 to 256; the others run the same steps on their own
evenly spread sample: the exact top-k, every list ranked, the fewest lists whose mean
recall less one standard error reaches 0.99), then the search at the nprobe it chose,
with its top-k recall over all the queries. Medians of the per-round ratios to the
default size; the machine (CPU, flags, load) printed with the figures.

    python benchmarks/bench_ivf_check.py --data paired --repeat 5
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench_approx import machine, make_clustered, make_paired, topk_recall
from dehub.engine import build_reference_index, exact_search
from dehub.engine.ivf import probe_lists
from dehub.engine.ivf_auto import neighbour_ranks, nprobe_for_recall, recall_sample_rows


def check_on(index, queries: np.ndarray, rows: np.ndarray, k: int, recall: float) -> int:
    """The check's nprobe on the given sample rows (the steps of ``recall_check``)."""
    nlist = index.centroids.shape[0]
    q = queries[rows]
    _, true_ids = exact_search(q, index.database, k)
    list_of = np.empty(index.n, dtype=np.int64)
    list_of[index.list_rows] = np.repeat(np.arange(nlist), np.diff(index.list_bounds))
    _, order = probe_lists(q, index.centroids, nlist)
    return nprobe_for_recall(neighbour_ranks(order, list_of, true_ids), nlist, recall)[0]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", choices=["paired", "clustered"], default="paired")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--k", type=int, default=16)
    args = p.parse_args()
    data = make_paired(5000, 118_000) if args.data == "paired" else make_clustered(5000, 118_000)
    g, r = data["gallery"], data["reference"]
    print(f"machine: {machine()}")
    index = build_reference_index(r, engine="ivf")
    _, true_ids = exact_search(g, r, args.k)
    default = recall_sample_rows(g.shape[0]).size
    sizes = sorted({64, 128, 256, default})
    check = {s: [] for s in sizes}
    total = {s: [] for s in sizes}
    for rnd in range(args.repeat):
        line = []
        for s in sizes:
            t = time.perf_counter()
            if s == default:
                nprobe = index.recall_check(g, args.k, 0.99).nprobe
            else:
                nprobe = check_on(
                    index, g, np.unique(np.linspace(0, g.shape[0] - 1, s).astype(np.int64)), args.k, 0.99
                )
            t_check = time.perf_counter() - t
            t = time.perf_counter()
            ids = index.search(g, args.k, nprobe=nprobe)[1]
            t_scan = time.perf_counter() - t
            check[s].append(t_check)
            total[s].append(t_check + t_scan)
            line.append(
                f"{s} queries: nprobe {nprobe}, check {t_check:.3f} s, scan {t_scan:.3f} s, "
                f"recall {topk_recall(ids, true_ids):.4f}"
            )
        print(f"round {rnd + 1} (load {os.getloadavg()[0]:.1f}): " + " | ".join(line), flush=True)
    for s in sizes:
        rc = np.median(np.array(check[s]) / np.array(check[default]))
        rt = np.median(np.array(total[s]) / np.array(total[default]))
        print(
            f"{args.data}: {s} sampled queries: check {rc:.2f}x, check + scan {rt:.2f}x the default ({default})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
