"""The IVF recall check, sequential (the default) against the whole sample at once.

One process, one index per data set, alternating in every round: the sequential check
(:meth:`dehub.engine.ivf.IVFIndex.recall_check`: 64 sampled queries first, more only
while uncertain or worth it) and the whole sample (:func:`recall_sample_rows`, one
standard error: the check before the sequential one), each followed by the search at
the nprobe it chose; medians of the per-round ratios of check time and of check + scan
time. Prints the machine (CPU, flags, load) with the figures.

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


def whole_sample_check(index, queries: np.ndarray, k: int, recall: float) -> int:
    """The nprobe of the whole sample at once (the check as it was before the stages)."""
    nlist = index.centroids.shape[0]
    rows = recall_sample_rows(queries.shape[0])
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
    ratios_check, ratios_total = [], []
    for rnd in range(args.repeat):
        t = time.perf_counter()
        seq = index.recall_check(g, args.k, 0.99)
        t_seq = time.perf_counter() - t
        t = time.perf_counter()
        ids_seq = index.search(g, args.k, nprobe=seq.nprobe)[1]
        s_seq = time.perf_counter() - t
        t = time.perf_counter()
        p_all = whole_sample_check(index, g, args.k, 0.99)
        t_all = time.perf_counter() - t
        t = time.perf_counter()
        ids_all = index.search(g, args.k, nprobe=p_all)[1]
        s_all = time.perf_counter() - t
        ratios_check.append(t_seq / t_all)
        ratios_total.append((t_seq + s_seq) / (t_all + s_all))
        print(
            f"round {rnd + 1}: sequential {seq.rows.size} queries, nprobe {seq.nprobe}, check {t_seq:.3f} s, "
            f"scan {s_seq:.3f} s, recall {topk_recall(ids_seq, true_ids):.4f} | whole sample nprobe {p_all}, "
            f"check {t_all:.3f} s, scan {s_all:.3f} s, recall {topk_recall(ids_all, true_ids):.4f} "
            f"(load {os.getloadavg()[0]:.1f})",
            flush=True,
        )
    print(
        f"{args.data}: sequential / whole-sample check time, median of rounds {np.median(ratios_check):.2f}; "
        f"check + scan {np.median(ratios_total):.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
