"""`dehub build`'s gallery reads before/after the streamed write (issue 21 item 2).

"before" is ``Index.build`` then ``Index.save`` (three reads of the gallery: validation,
the reference top-k, the copy into the file); "after" is ``Index.build_to_file`` (two: one
pass validates, hashes and writes the rows into the temporary file, one feeds the fit),
what ``dehub build`` now runs. The gallery is a memory-mapped ``.npy`` file, as the CLI
reads it. Each round runs both, alternating which goes first, once with the gallery's
pages in the page cache ("warm") and once after evicting them with
``posix_fadvise(DONTNEED)`` ("cold", the gallery file only; the reference stays
cached). Rows read from the gallery are counted by a wrapper around the memmap's
slicing, the time per build is measured, and the loaded arrays of both files are
compared. Prints one JSON object (medians, median per-round ratios, CPU, load averages).

    flock /tmp/dehub-bench.lock nice -n 5 python benchmarks/bench_build_reads.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from dehub import Index


class _Counting:
    """A memory-mapped gallery that counts the rows dehub slices from it."""

    def __init__(self, mm: np.memmap) -> None:
        self._mm = mm
        self.shape, self.dtype, self.ndim = mm.shape, mm.dtype, mm.ndim
        self.rows = 0

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, key):
        out = self._mm[key]
        self.rows += int(np.shape(out)[0]) if np.ndim(out) == 2 else 1
        return np.asarray(out)


def _cpu() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def _evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--n-reference", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    g = rng.standard_normal((args.n, args.d), dtype=np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    np.save(tmp / "g.npy", g)
    del g
    r = rng.standard_normal((args.n_reference, args.d), dtype=np.float32)
    r /= np.linalg.norm(r, axis=1, keepdims=True)

    def before(gallery) -> None:
        Index.build(gallery, r, k=args.k).save(tmp / "before.dehub")

    def after(gallery) -> None:
        Index.build_to_file(tmp / "after.dehub", gallery, r, k=args.k)

    arms = {"before": before, "after": after}
    times: dict[str, dict[str, list[float]]] = {c: {a: [] for a in arms} for c in ("warm", "cold")}
    rows: dict[str, int] = {}
    ratios: dict[str, list[float]] = {"warm": [], "cold": []}
    loads = [os.getloadavg()]
    for rnd in range(args.rounds):
        for cache in ("warm", "cold"):
            order = ("before", "after") if rnd % 2 == 0 else ("after", "before")
            for arm in order:
                if cache == "cold":
                    _evict(tmp / "g.npy")
                gallery = _Counting(np.load(tmp / "g.npy", mmap_mode="r"))
                t0 = time.perf_counter()
                arms[arm](gallery)
                times[cache][arm].append(time.perf_counter() - t0)
                rows[arm] = gallery.rows
            ratios[cache].append(times[cache]["after"][-1] / times[cache]["before"][-1])
        loads.append(os.getloadavg())
        print(
            f"round {rnd + 1}/{args.rounds}: warm {ratios['warm'][-1]:.3f} cold {ratios['cold'][-1]:.3f}",
            flush=True,
        )
    a, b = Index.load(tmp / "after.dehub"), Index.load(tmp / "before.dehub")
    np.testing.assert_array_equal(a.model.gallery_, b.model.gallery_)
    np.testing.assert_array_equal(a.model.bias_, b.model.bias_)
    result = {
        "what": f"build (NNN k={args.k}) of a memory-mapped {args.n} x {args.d} float32 .npy gallery "
        f"({args.n * args.d * 4 / 1e6:.0f} MB), {args.n_reference} reference rows",
        "rounds": args.rounds,
        "cpu": _cpu(),
        "loadavg_per_round": [[round(x, 2) for x in la] for la in loads],
        "gallery_rows_read": {arm: rows[arm] for arm in arms},
        "gallery_reads": {arm: rows[arm] / args.n for arm in arms},
        **{
            f"{cache}_median_s": {arm: round(statistics.median(times[cache][arm]), 3) for arm in arms}
            for cache in times
        },
        **{
            f"{cache}_median_ratio_after_over_before": round(statistics.median(ratios[cache]), 3)
            for cache in ratios
        },
        **{f"{cache}_ratio_range": [round(min(v), 3), round(max(v), 3)] for cache, v in ratios.items()},
        "same_arrays": True,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
