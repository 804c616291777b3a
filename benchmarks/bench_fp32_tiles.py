"""fp32 engine, COCO bias shape: the cache-size rule's score tile (4x the worker's tile with
the compiled selection) against half and twice it, alternating in one process with the two
bare fp32 GEMMs of bench_bf16.py; medians of per-round ratios to the rule (issue 26, item 4:
would a measured tile choice beat the rule on this CPU?). It sets the engine's tile factor,
a module constant, between calls: a benchmark's probe, not an API.

    flock /tmp/dehub-bench.lock nice -n 5 python benchmarks/bench_fp32_tiles.py
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from bench_bf16 import bare_gemm, bare_gemm_workers, data
from dehub.engine import exact, exact_search
from dehub.engine.hardware import score_tile_bytes

g = data(5000, 512, 1)
r = data(118000, 512, 2)
factors = (4, 2, 8)
times = {f: [] for f in factors}
bare = []
exact_search(g[:512], r, 128)
for rnd in range(4):
    t0 = time.perf_counter()
    bare_gemm(g, r)
    a = time.perf_counter() - t0
    t0 = time.perf_counter()
    bare_gemm_workers(g, r)
    b = time.perf_counter() - t0
    bare.append(min(a, b))
    for f in factors:
        exact._COMPILED_TILE_FACTOR = f
        t0 = time.perf_counter()
        exact_search(g, r, 128)
        times[f].append(time.perf_counter() - t0)
    print(
        rnd,
        round(bare[-1], 2),
        {f: round(v[-1], 2) for f, v in times.items()},
        open("/proc/loadavg").read().strip(),
        flush=True,
    )
rule = np.array(times[4])
print(
    json.dumps(
        {
            "score_tile_bytes": score_tile_bytes(),
            "tile_bytes_rule": score_tile_bytes() * 4,
            "ratio_to_rule": {f: float(np.median(np.array(v) / rule)) for f, v in times.items()},
            "rule_over_bare_gemm": float(np.median(rule / np.array(bare))),
        }
    )
)
