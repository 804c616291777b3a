"""Index.save before/after the one-read write (issue 21 item 2): time per save.

"before" is write_container as of commit 12fd55f (hash every array in one pass, then
write it in another), loaded from git into a private module; "after" is the code as it
is (the SHA-256 taken on the bytes as they are written). Alternated in one process,
``--rounds`` rounds, each writing the same arrays to a fresh file (page cache warm: the
passes are memory reads); both files must be byte-identical. Prints one JSON object with
medians, the median per-round ratio, the CPU model and load averages.

    flock /tmp/dehub-bench.lock python benchmarks/bench_save.py --rounds 9
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import dehub._format as after

ROOT = Path(__file__).resolve().parents[1]


def _before_module():
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", "12fd55f:src/dehub/_format.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    src = src.replace("from ._io import", "from dehub._io import").replace(
        "from ._json import", "from dehub._json import"
    )
    path = Path(tempfile.mkdtemp()) / "format_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("format_before", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["format_before"] = mod
    spec.loader.exec_module(mod)
    return mod


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--out")
    args = ap.parse_args()
    before = _before_module()
    rng = np.random.default_rng(0)
    arrays = {
        "gallery": rng.standard_normal((args.n, args.d), dtype=np.float32),
        "ids": np.arange(args.n, dtype=np.int64),
        "model.topk_scores": rng.standard_normal((args.n, 16), dtype=np.float32),
    }
    header = {"kind": "dehub.index", "method": "nnn", "params": {}, "metadata": {}}
    tmp = Path(tempfile.mkdtemp())
    times = {"before": [], "after": []}
    ratios = []
    for r in range(args.rounds):
        for arm in ("before", "after") if r % 2 == 0 else ("after", "before"):
            mod = before if arm == "before" else after
            t0 = time.perf_counter()
            mod.write_container(tmp / f"{arm}.dehub", header, arrays)
            times[arm].append(time.perf_counter() - t0)
        assert filecmp.cmp(tmp / "before.dehub", tmp / "after.dehub", shallow=False)
        ratios.append(times["after"][-1] / times["before"][-1])
    result = {
        "what": f"write_container of a {args.n} x {args.d} float32 gallery + ids + (n, 16) statistics "
        f"({sum(a.nbytes for a in arrays.values()) / 1e6:.0f} MB)",
        "rounds": args.rounds,
        "cpu": _cpu(),
        "loadavg_end": os.getloadavg(),
        "before_median_ms": round(1e3 * statistics.median(times["before"]), 1),
        "after_median_ms": round(1e3 * statistics.median(times["after"]), 1),
        "median_time_ratio_after_over_before": round(statistics.median(ratios), 3),
        "time_ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "files_identical": True,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
