import sys, time, os, numpy as np
sys.path.insert(0, "benchmarks")
from bench_approx import make_paired, machine
from dehub.engine import exact_search
d = make_paired(5000, 118000); g, r = d["gallery"], d["reference"]
print(machine())
sizes = [64, 128, 256, 512]
t = {s: [] for s in sizes}
for rnd in range(5):
    for s in sizes:
        rows = np.unique(np.linspace(0, 4999, s).astype(np.int64)); q = g[rows]
        t0 = time.perf_counter(); exact_search(q, r, 16); t[s].append(time.perf_counter() - t0)
    print("round", rnd + 1, {s: round(t[s][-1], 3) for s in sizes}, "load", os.getloadavg()[0], flush=True)
for s in sizes:
    print(s, "median", round(float(np.median(t[s])), 3), "ratio to 128 (median of rounds)", round(float(np.median(np.array(t[s]) / np.array(t[128]))), 2))
