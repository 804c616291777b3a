"""NNN bias for 1,000,000 gallery x 1,000,000 reference items, d=512, memory-mapped.

The data are generated to a temporary directory in chunks (clustered, as in
``bench_approx.make_paired``: topics, low-rank variation, modality gap, planted hubs),
written as ``.npy`` files and opened memory-mapped, so neither side is ever loaded
whole. The bias is computed with an approximate engine (default ``ivf``; ``ivf-sq8``
keeps the reference in 1 byte/dimension), then the top-k recall and bias error are
measured on a sample of gallery items against the exact engine, whose full cost is
extrapolated from the sample.

Memory: the index (float32 reference copy for ``ivf``, 8-bit codes for ``ivf-sq8``)
plus the working budget (``--memory-budget-mb``, candidate buffers of a query batch)
plus the output top-k (n_gallery x k x 12 bytes). Reported: peak RSS
(``resource.getrusage``; includes memory-mapped file pages, which the OS can drop) and
the peak of numpy heap allocations (``tracemalloc``).

Full scale (about 4.1 GB of temporary files)::

    python benchmarks/bench_million.py --engine ivf
    python benchmarks/bench_million.py --engine ivf-sq8

Smoke run::

    python benchmarks/bench_million.py --small
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dehub
from bench_approx import _unit, machine
from dehub.datasets.shards import open_embeddings
from dehub.engine import build_reference_index
from dehub.evaluation.engine_eval import evaluate_engine

_CHUNK = 50_000


def generate(directory: Path, n_gallery: int, n_reference: int, d: int, seed: int = 0) -> tuple[Path, Path]:
    """Write gallery.npy / reference.npy (float32 unit rows) chunk by chunk."""
    rng = np.random.default_rng(seed)
    n_topics, rank = int(np.clip(n_reference // 1000, 300, 1000)), 32
    topics = _unit(rng.standard_normal((n_topics, d)))
    basis = (rng.standard_normal((rank, d)) / np.sqrt(d * rank)).astype(np.float32)
    gap_img, gap_txt, shared, hub_dir = _unit(rng.standard_normal((4, d)))

    def view(n, direction):
        z = topics[rng.integers(0, n_topics, n)] + 0.6 * (
            rng.standard_normal((n, rank)).astype(np.float32) @ basis
        )
        low = rng.standard_normal((n, rank)).astype(np.float32) @ basis
        iso = rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
        return _unit(_unit(z + 0.8 * low + 0.6 * iso) + 0.3 * direction + 0.3 * shared)

    paths = []
    for name, n, direction in (("gallery", n_gallery, gap_img), ("reference", n_reference, gap_txt)):
        path = directory / f"{name}.npy"
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
        for s in range(0, n, _CHUNK):
            block = view(min(_CHUNK, n - s), direction)
            if name == "gallery":  # planted hubs: 1% pulled toward a caption-side direction
                hubs = rng.random(block.shape[0]) < 0.01
                block[hubs] = _unit(block[hubs] + 0.8 * _unit((gap_txt + shared)[None])[0])
            out[s : s + block.shape[0]] = block
        out.flush()
        del out
        paths.append(path)
    return paths[0], paths[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gallery", type=int, default=1_000_000)
    p.add_argument("--reference", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--alpha", type=float, default=0.75)
    p.add_argument("--engine", default="ivf", choices=["ivf", "ivf-sq8", "hnsw"])
    p.add_argument("--nprobe", type=int, default=8)
    p.add_argument("--nlist", type=int, default=None)
    p.add_argument("--rerank", type=int, default=None)
    p.add_argument("--sample", type=int, default=1000, help="gallery items checked against exact")
    p.add_argument("--memory-budget-mb", type=int, default=512)
    p.add_argument("--workdir", help="where to write the data (default: a temporary directory, removed)")
    p.add_argument(
        "--reuse", action="store_true", help="with --workdir: use the data files already there (same seed)"
    )
    p.add_argument("--small", action="store_true", help="smoke run: 20,000 x 20,000")
    p.add_argument("--target-seconds", type=float, default=90.0, help="build + search target")
    p.add_argument("--json", help="write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.small:
        args.gallery, args.reference, args.sample = 20_000, 20_000, 200

    tmp = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="dehub-million-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        gpath, rpath = tmp / "gallery.npy", tmp / "reference.npy"
        shapes = {(args.gallery, args.dim), (args.reference, args.dim)}
        if args.reuse and gpath.exists() and rpath.exists():
            found = {np.load(gpath, mmap_mode="r").shape, np.load(rpath, mmap_mode="r").shape}
            if found != shapes:
                raise SystemExit(f"--reuse: {tmp} holds shapes {sorted(found)}, expected {sorted(shapes)}")
            what = "reused"
        else:
            gpath, rpath = generate(tmp, args.gallery, args.reference, args.dim)
            what = f"generated in {time.perf_counter() - t:.0f} s"
        print(f"machine: {machine()}; dehub {dehub.__version__}")
        print(
            f"{args.gallery:,} x {args.reference:,} x {args.dim} float32 {what} at {tmp} "
            "(memory-mapped from here on)"
        )
        gallery, reference = open_embeddings(gpath), open_embeddings(rpath)

        params = {
            "nprobe": args.nprobe,
            "nlist": args.nlist,
            "rerank": args.rerank,
            "memory_budget": args.memory_budget_mb * 2**20,
        }
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        tracemalloc.start()
        t0 = time.perf_counter()
        index = build_reference_index(reference, engine=args.engine, engine_params=params, progress=True)
        t_build = time.perf_counter() - t0
        t1 = time.perf_counter()
        scores, ids = index.search(gallery, args.k, progress=True)
        bias = (args.alpha * scores.mean(axis=1, dtype=np.float64)).astype(np.float32)
        t_search = time.perf_counter() - t1
        _, heap_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        total = t_build + t_search
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out_mb = (scores.nbytes + ids.nbytes + bias.nbytes) / 2**20
        index_mb = index.nbytes / 2**20
        phases = dict(getattr(index, "build_timings", {}))
        print(
            f"{args.engine}: build {t_build:.1f} s ("
            + ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
            + f") + search {t_search:.1f} s = {total:.1f} s "
            f"(target <= {args.target_seconds:.0f} s: {'met' if total <= args.target_seconds else 'NOT met'})"
        )
        print(
            f"memory: index {index_mb:.0f} MiB, working budget {args.memory_budget_mb} MiB, output "
            f"{out_mb:.0f} MiB; numpy heap peak (tracemalloc) {heap_peak / 2**20:.0f} MiB "
            f"(bound index+budget+output = {index_mb + args.memory_budget_mb + out_mb:.0f} MiB: "
            f"{'within' if heap_peak / 2**20 <= index_mb + args.memory_budget_mb + out_mb else 'EXCEEDED'}); "
            f"peak RSS {rss:.0f} MiB (before: {rss0:.0f} MiB; includes mapped file pages)"
        )

        rep = evaluate_engine(gallery, reference, args.k, alpha=args.alpha, sample=args.sample, index=index)
        exact_full = rep.exact_seconds * args.gallery / rep.n_sample
        print(
            f"top-{args.k} recall on {rep.n_sample} sampled items: {rep.recall:.4f}; bias MAE "
            f"{rep.bias_mae:.2e} (max {rep.bias_max_error:.2e}, relative {rep.bias_rel_error:.2e}); "
            f"exact engine extrapolated from the sample: {exact_full / 60:.0f} min "
            f"({exact_full / total:.0f}x the approximate total)"
        )
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "command": " ".join(["python", *sys.argv]),
                        "machine": machine(),
                        "load_avg_after": list(os.getloadavg()),
                        "args": vars(args),
                        "build_seconds": t_build,
                        "build_phases_seconds": phases,
                        "build_and_search_seconds": total,
                        "params": dict(vars(index.params)),
                        "search_seconds": t_search,
                        "index_mib": index_mb,
                        "heap_peak_mib": heap_peak / 2**20,
                        "peak_rss_mib": rss,
                        "report": rep.as_dict(),
                        "exact_extrapolated_seconds": exact_full,
                    },
                    indent=2,
                )
            )
    finally:
        if not args.workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
