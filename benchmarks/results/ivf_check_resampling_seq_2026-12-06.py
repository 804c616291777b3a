import sys, os, numpy as np
sys.path.insert(0, "benchmarks")
from bench_approx import make_paired, make_clustered
from dehub.engine import build_reference_index, exact_search
from dehub.engine.ivf import probe_lists
from dehub.engine.ivf_auto import neighbour_ranks, nprobe_for_recall
for kind in ["paired", "clustered"]:
    f = f"/tmp/ivf2_ranks_{kind}.npy"
    if os.path.exists(f):
        ranks = np.load(f); nlist = 512
    else:
        d = make_paired(5000, 118000) if kind == "paired" else make_clustered(5000, 118000)
        g, r = d["gallery"], d["reference"]
        idx = build_reference_index(r, engine="ivf")
        nlist = idx.centroids.shape[0]
        _, tid = exact_search(g, r, 16)
        list_of = np.empty(idx.n, dtype=np.int64); list_of[idx.list_rows] = np.repeat(np.arange(nlist), np.diff(idx.list_bounds))
        _, order = probe_lists(g, idx.centroids, nlist)
        ranks = neighbour_ranks(order, list_of, tid); np.save(f, ranks)
    true = np.array([(ranks < p).mean() for p in range(1, nlist + 1)])
    rng = np.random.default_rng(0)
    def seq(rows, rule):
        a = rows[:64]
        p1 = nprobe_for_recall(ranks[a], nlist, .99)[0]
        p2 = nprobe_for_recall(ranks[a], nlist, .99, margin=2.0)[0]
        p0 = nprobe_for_recall(ranks[a], nlist, .99, margin=0.0)[0]
        grow = {"p2!=p1": p2 != p1, "p1!=p0": p1 != p0, "never": False}[rule]
        if not grow: return p1, 64
        return nprobe_for_recall(ranks[rows], nlist, .99)[0], 128
    for rule in ["never", "p1!=p0", "p2!=p1"]:
        ps, ss = [], []
        for _ in range(400):
            rows = rng.choice(5000, 128, replace=False)
            p, s = seq(rows, rule); ps.append(p); ss.append(s)
        ps = np.array(ps)
        print(f"{kind} rule {rule}: nprobe mean {ps.mean():.2f}, sample mean {np.mean(ss):.0f}, P(true<0.99)={np.mean(true[ps-1] < .99):.3f}", flush=True)
    ps = np.array([nprobe_for_recall(ranks[rng.choice(5000, 128, replace=False)], nlist, .99)[0] for _ in range(400)])
    print(f"{kind} fixed 128: nprobe mean {ps.mean():.2f}, P(true<0.99)={np.mean(true[ps-1] < .99):.3f}")
