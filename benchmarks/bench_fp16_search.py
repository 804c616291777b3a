"""A small search on a float16 gallery: memory (tracemalloc peak) and time, before/after.

Issue 21 item 2: a 16-query search of a 100k x 128 float16 gallery used to convert the
whole gallery to float32 on every call (the dense path's ``np.asarray(database, float32)``:
51.2 MB of the 56.5 MB peak). Now the dense path is taken only when the database needs no
conversion; a float16 gallery is searched block by block (each block converted alone).

The two arms run alternately in one process (``--rounds`` rounds): "before" restores the
old dense-path rule by patching ``dehub.engine.exact._dense_fits``; "after" is the code as
it is. Both must return the same results. Prints one JSON object: per-arm medians,
the median of per-round time ratios (after / before), the CPU model, flags of interest
and load averages.

    flock /tmp/dehub-bench.lock python benchmarks/bench_fp16_search.py --rounds 15
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import tracemalloc

import numpy as np

import dehub
import dehub.engine.exact as exact


def _old_dense_fits(n_queries, database, dt, memory_budget):
    """The rule before the change: a converted copy of the database counted, then allowed."""
    if n_queries > exact.SMALL_BATCH_ROWS:
        return False
    nd, d = database.shape
    need = n_queries * nd * (2 * dt.itemsize + 1)
    if not (isinstance(database, np.ndarray) and database.dtype == dt):
        need += nd * d * dt.itemsize
    return need <= memory_budget


def _cpu() -> dict:
    model, flags = platform.processor(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not model.strip():
                    model = line.split(":", 1)[1].strip()
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    flags = sorted(have & {"avx2", "avx512f", "f16c", "avx512_fp16", "amx_bf16"})
                    break
    except OSError:
        pass
    return {"model": model, "flags": flags}


def _one(model, q, k):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = model.search(q, k, normalize="none")
    dt = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return dt, peak, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", help="write the JSON here too")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    g = rng.standard_normal((args.n, args.d), dtype=np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    ref = rng.standard_normal((2000, args.d), dtype=np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    model = dehub.NNN(k=16, alpha=0.75).fit(g.astype(np.float16), ref, normalize="none")
    assert model.gallery_.dtype == np.float16
    new_rule = exact._dense_fits
    rows = {"before": [], "after": []}
    ratios = []
    for r in range(args.rounds):
        q = rng.standard_normal((args.queries, args.d), dtype=np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        got = {}
        for arm in ("before", "after") if r % 2 == 0 else ("after", "before"):
            exact._dense_fits = _old_dense_fits if arm == "before" else new_rule
            try:
                dt, peak, out = _one(model, q, args.k)
            finally:
                exact._dense_fits = new_rule
            rows[arm].append((dt, peak))
            got[arm] = out
        np.testing.assert_array_equal(got["before"][1], got["after"][1])
        np.testing.assert_allclose(got["before"][0], got["after"][0], rtol=1e-6, atol=1e-6)
        ratios.append(rows["after"][-1][0] / rows["before"][-1][0])
    result = {
        "what": f"{args.queries}-query NNN search, {args.n} x {args.d} float16 gallery, k={args.k}",
        "rounds": args.rounds,
        "cpu": _cpu(),
        "loadavg_end": os.getloadavg(),
        "numpy": np.__version__,
        **{
            arm: {
                "median_ms": round(1e3 * statistics.median(t for t, _ in v), 2),
                "median_peak_MB": round(statistics.median(p for _, p in v) / 1e6, 2),
            }
            for arm, v in rows.items()
        },
        "median_time_ratio_after_over_before": round(statistics.median(ratios), 3),
        "time_ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
