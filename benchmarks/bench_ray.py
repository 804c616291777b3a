"""Ray runner vs one process: NNN statistics with the IVF engine on memory-mapped shards.

    flock /tmp/dehub-bench.lock python benchmarks/bench_ray.py                      # 1M x 1M x 512
    flock /tmp/dehub-bench.lock python benchmarks/bench_ray.py --gallery 200000 --reference 200000
    python benchmarks/bench_ray.py --small                                          # smoke run

Synthetic clustered unit vectors (float32) are written once as ``.npy`` shards (gallery)
and one ``.npy`` (reference) in ``--workdir`` and memory-mapped by both sides. Each side
runs in its own subprocess with the same number of cores (``--cores``):

  single   dehub.NNN(k, engine="ivf").fit(ShardedArray(gallery), reference) with
           ``cores`` BLAS threads;
  ray      dehub.distributed.fit on a local Ray cluster of ``cores`` CPUs (one actor per
           CPU, one BLAS thread each), the IVF index built once by the driver and
           broadcast through the object store; cluster start timed apart.

Peak memory of each side's whole process tree (the side's process and every descendant:
Ray's GCS, raylet, workers) is sampled every 0.2 s from ``/proc/PID/smaps_rollup``:
RSS summed (counts the object store's shared pages once per process that maps them) and
PSS summed (shares them out: the tree's real footprint). The two sides' statistics are
compared (ids equal; scores to float32 rounding).

``--cost-model`` also measures the per-core throughput that ``docs/distributed.md``'s
cost model uses: the exact engine (GEMM + streamed top-k) in pairs/s and the IVF search
in queries/s and effective MAC/s, both with one BLAS thread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_data(path: Path, n: int, d: int, seed: int, shards: int) -> list[Path]:
    """Clustered unit vectors with a shared direction, written in blocks (low memory)."""
    rng = np.random.default_rng(seed)
    crng = np.random.default_rng(1234)  # the same clusters on both sides
    centers = crng.standard_normal((256, d)).astype(np.float32) / np.sqrt(d)
    common = crng.standard_normal(d).astype(np.float32) / np.sqrt(d)
    path.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n, shards + 1).astype(int)
    files = []
    for i in range(shards):
        f = path / f"emb_{i}.npy"
        files.append(f)
        rows = int(bounds[i + 1] - bounds[i])
        if f.exists() and np.load(f, mmap_mode="r").shape == (rows, d):
            continue
        tmp = path / f".emb_{i}.npy.tmp"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, d))
        for s in range(0, rows, 20000):
            m = min(20000, rows - s)
            c = centers[rng.integers(0, centers.shape[0], m)]
            x = 0.6 * common + c + 0.8 * rng.standard_normal((m, d), dtype=np.float32) / np.sqrt(d)
            out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        out.flush()
        del out
        os.replace(tmp, f)
    return files


# --------------------------------------------------------------------------- memory
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(p.name))
    return kids


def tree_memory(root: int) -> tuple[float, float, int]:
    """(RSS MiB summed, PSS MiB summed, processes) of ``root`` and all its descendants."""
    kids = _children()
    todo, seen = [root], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo += kids.get(pid, [])
    rss = pss = 0
    for pid in seen:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, pss / 1024, len(seen)


def run_side(args_list: list[str], env: dict[str, str]) -> dict:
    """Run one side in a subprocess, sampling its process tree; return its JSON + peaks."""
    proc = subprocess.Popen(
        [sys.executable, __file__, *args_list], env=env, stdout=subprocess.PIPE, text=True
    )
    peak = {"rss_mb": 0.0, "pss_mb": 0.0, "processes": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            rss, pss, n = tree_memory(proc.pid)
            if pss > peak["pss_mb"]:
                peak["pss_mb"] = pss
            if rss > peak["rss_mb"]:
                peak["rss_mb"] = rss
            peak["processes"] = max(peak["processes"], n)
            stop.wait(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, _ = proc.communicate()
    stop.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"side {args_list[:2]} failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update({f"tree_peak_{k}": round(v, 1) for k, v in peak.items()})
    return result


# --------------------------------------------------------------------------- sides
def side_single(a) -> dict:
    import dehub
    from dehub.datasets.shards import ShardedArray

    gallery = ShardedArray(
        sorted(Path(a.workdir, "gallery").glob("emb_*.npy"), key=lambda p: int(p.stem[4:]))
    )
    reference = np.load(Path(a.workdir, "reference", "emb_0.npy"), mmap_mode="r")
    t = time.perf_counter()
    model = dehub.NNN(k=a.k, engine="ivf", engine_params=json.loads(a.engine_params)).fit(gallery, reference)
    seconds = time.perf_counter() - t
    np.save(Path(a.workdir, "single_ids.npy"), model.topk_ids_)
    np.save(Path(a.workdir, "single_scores.npy"), model.topk_scores_)
    return {"side": "single", "seconds": round(seconds, 2)}


def side_ray(a) -> dict:
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import shutil

    import ray

    from dehub.distributed import fit, load_index

    out = Path(a.workdir, "ray_out")
    shutil.rmtree(out, ignore_errors=True)
    tmp = Path(a.workdir, "rt")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    t = time.perf_counter()
    ray.init(
        num_cpus=a.cores,
        include_dashboard=False,
        _temp_dir=str(tmp),
        logging_level="ERROR",
        log_to_driver=False,
    )
    init_s = time.perf_counter() - t
    t = time.perf_counter()
    summary = fit(
        "nnn",
        Path(a.workdir, "gallery"),
        Path(a.workdir, "reference", "emb_0.npy"),
        out,
        engine="ivf",
        engine_params=json.loads(a.engine_params),
        num_workers=a.cores,
        part_rows=a.part_rows,
        progress=False,
        k=a.k,
    )
    seconds = time.perf_counter() - t
    ray.shutdown()
    index = load_index(out, verify=False)
    single_ids = np.load(Path(a.workdir, "single_ids.npy"), mmap_mode="r")
    single_scores = np.load(Path(a.workdir, "single_scores.npy"), mmap_mode="r")
    ids = np.asarray(index.model.topk_ids_)
    scores = np.asarray(index.model.topk_scores_)
    return {
        "side": "ray",
        "seconds": round(seconds, 2),
        "cluster_start_seconds": round(init_s, 2),
        "index_build_seconds": summary.build_seconds,
        "parts": summary.parts,
        "ids_equal_to_single": bool(np.array_equal(ids, single_ids)),
        "ids_mismatch_fraction": float(np.mean(ids != single_ids)),
        "max_score_diff": float(np.abs(scores - single_scores).max()),
    }


def side_throughput(a) -> dict:
    """Per-core throughput (one BLAS thread) of the exact engine and the IVF search."""
    from dehub.engine import build_reference_index
    from dehub.engine.exact import exact_search

    ref = np.load(Path(a.workdir, "reference", "emb_0.npy"), mmap_mode="r")
    gal = np.load(Path(a.workdir, "gallery", "emb_0.npy"), mmap_mode="r")
    n_ref = min(ref.shape[0], 200000)
    nq = min(gal.shape[0], 4096)
    q = np.array(gal[:nq])
    r = np.array(ref[:n_ref])
    d = r.shape[1]
    exact_search(q[:256], r[:20000], a.k)  # warm up
    t = time.perf_counter()
    exact_search(q, r, a.k)
    exact_s = time.perf_counter() - t
    params = json.loads(a.engine_params)
    index = build_reference_index(r, engine="ivf", engine_params=params)
    nq_ivf = min(gal.shape[0], 50000)
    qi = np.array(gal[:nq_ivf])
    t = time.perf_counter()
    index.search(qi, a.k)
    ivf_s = time.perf_counter() - t
    nlist = index.centroids.shape[0]
    nprobe = min(index.params.nprobe, nlist)
    mac_per_query = nlist * d + nprobe * (n_ref / nlist) * d
    return {
        "side": "throughput",
        "exact": {
            "queries": nq,
            "reference": n_ref,
            "dim": d,
            "k": a.k,
            "seconds": round(exact_s, 3),
            "pairs_per_second": nq * n_ref / exact_s,
            "gflops": 2 * nq * n_ref * d / exact_s / 1e9,
        },
        "ivf": {
            "queries": nq_ivf,
            "reference": n_ref,
            "nlist": nlist,
            "nprobe": nprobe,
            "build_seconds": round(index.build_seconds, 3),
            "search_seconds": round(ivf_s, 3),
            "queries_per_second": nq_ivf / ivf_s,
            "mac_per_query": mac_per_query,
            "effective_gmac_per_second": nq_ivf * mac_per_query / ivf_s / 1e9,
        },
    }


def machine() -> dict:
    """CPU model, caches, bf16 flags, load and versions (dehub.engine.hardware.describe_machine)."""
    from dehub.engine.hardware import describe_machine

    return describe_machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gallery", type=int, default=1_000_000)
    p.add_argument("--reference", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--shards", type=int, default=8, help="gallery .npy shards")
    p.add_argument("--part-rows", type=int, default=65536)
    p.add_argument("--engine-params", default='{"nprobe": 8, "seed": 0}', help="IVF knobs (JSON)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each side (alternating); best kept")
    p.add_argument("--workdir", default="/tmp/dehub-bench-ray")
    p.add_argument("--small", action="store_true", help="20k x 20k x 128 smoke run")
    p.add_argument("--cost-model", action="store_true", help="also measure per-core throughput")
    p.add_argument("--output", default=str(HERE / "results" / "ray.json"))
    p.add_argument("--side", choices=["single", "ray", "throughput"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.small:
        a.gallery, a.reference, a.dim, a.shards, a.part_rows = 20000, 20000, 128, 4, 4096
    if a.side:
        fn = {"single": side_single, "ray": side_ray, "throughput": side_throughput}[a.side]
        print(json.dumps(fn(a)))
        return
    work = Path(a.workdir)
    t = time.perf_counter()
    make_data(work / "gallery", a.gallery, a.dim, seed=1, shards=a.shards)
    make_data(work / "reference", a.reference, a.dim, seed=2, shards=1)
    print(f"data ready in {time.perf_counter() - t:.1f} s under {work}", file=sys.stderr)
    base = [
        "--workdir", str(work), "--k", str(a.k), "--cores", str(a.cores), "--engine-params", a.engine_params,
        "--part-rows", str(a.part_rows), "--gallery", str(a.gallery), "--reference", str(a.reference),
        "--dim", str(a.dim),
    ]  # fmt: skip
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    threads = {k: str(a.cores) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    info = machine()
    singles, rays = [], []
    for _ in range(a.repeats):  # alternate the sides so a change of load hits both
        singles.append(run_side([*base, "--side", "single"], {**env, **threads}))
        print(f"single: {singles[-1]}", file=sys.stderr)
        rays.append(run_side([*base, "--side", "ray"], env))
        print(f"ray:    {rays[-1]}", file=sys.stderr)
    single = min(singles, key=lambda r: r["seconds"])
    ray_side = min(rays, key=lambda r: r["seconds"])
    result = {
        "benchmark": "bench_ray",
        "scale": {"gallery": a.gallery, "reference": a.reference, "dim": a.dim, "k": a.k},
        "engine": "ivf",
        "engine_params": json.loads(a.engine_params),
        "cores": a.cores,
        "machine": info,
        "single": single,
        "ray": ray_side,
        "all_seconds": {"single": [r["seconds"] for r in singles], "ray": [r["seconds"] for r in rays]},
        "overhead_ratio": round(ray_side["seconds"] / single["seconds"], 3),
        "overhead_ratio_with_cluster_start": round(
            (ray_side["seconds"] + ray_side["cluster_start_seconds"]) / single["seconds"], 3
        ),
        "load_after": os.getloadavg(),
    }
    if a.cost_model:
        one = {k: "1" for k in threads}
        result["per_core_throughput"] = run_side([*base, "--side", "throughput"], {**env, **one})
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
