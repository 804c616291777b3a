import sys, time, numpy as np
sys.path.insert(0, "benchmarks")
from bench_approx import make_paired, make_clustered
from dehub.engine import build_reference_index, exact_search
from dehub.engine.ivf import probe_lists
from dehub.engine.ivf_auto import neighbour_ranks, nprobe_for_recall
for kind in ["paired", "clustered"]:
    d = make_paired(5000, 118000) if kind == "paired" else make_clustered(5000, 118000)
    g, r = d["gallery"], d["reference"]
    idx = build_reference_index(r, engine="ivf")
    nlist = idx.centroids.shape[0]
    _, tid = exact_search(g, r, 16)
    list_of = np.empty(idx.n, dtype=np.int64); list_of[idx.list_rows] = np.repeat(np.arange(nlist), np.diff(idx.list_bounds))
    _, order = probe_lists(g, idx.centroids, nlist)
    ranks = neighbour_ranks(order, list_of, tid)
    true = np.array([(ranks < p).mean() for p in range(1, nlist + 1)])
    need = int(np.argmax(true >= 0.99)) + 1
    print(kind, "true recall by p:", np.round(true[:15], 4), "needed", need, flush=True)
    rng = np.random.default_rng(0)
    for s in (64, 128, 256):
        for m in (1.0, 1.5, 2.0):
            ps = []
            for _ in range(300):
                rows = rng.choice(5000, s, replace=False)
                ps.append(nprobe_for_recall(ranks[rows], nlist, 0.99, margin=m)[0])
            ps = np.array(ps)
            fail = np.mean(true[ps - 1] < 0.99)
            print(f"  s={s} margin={m}: nprobe median {np.median(ps)}, mean {ps.mean():.2f}, P(true<0.99)={fail:.3f}, min true {true[ps-1].min():.4f}", flush=True)
