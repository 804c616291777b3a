"""Core benchmark: NNN bias and corrected search against the bare GEMM and nnn-retrieval.

Every measurement runs in its own subprocess so that its peak memory (VmHWM) is its
own; inputs are written once to .npy files in a temporary directory. The steps run in
--repeats rounds, each step once per round (round robin), and the best time of each step
is kept, all in one run so the ratios compare like with like.

    python benchmarks/bench_core.py                  # COCO scale: 5,000 x 118,000 x 512, 25,000 queries
    python benchmarks/bench_core.py --small          # quick smoke run
    python benchmarks/bench_core.py --gallery 50000 --reference 500000 --queries 0 --skip-nnn-retrieval
    python benchmarks/bench_core.py --paired 9     # dehub vs GEMM in pairs, one process

Measured steps:
  gemm-bias     bare float32 GEMM of gallery x reference in the same blocks (no selection)
  dehub-bias    dehub.NNN(k).fit(gallery, reference): checks + blocked GEMM + streamed top-k
  nnn-bias      nnn-retrieval: NNNRanker(...) construction (torch einsum + topk per batch)
  gemm-search   bare GEMM of queries x gallery
  dehub-search  fitted NNN .search(queries, top)
  nnn-search    nnn-retrieval NNNRanker.search(queries, top)
  dehub-*-numpy with --numpy-selection: the dehub steps with numpy's selection
                (DEHUB_KERNELS=0) instead of the compiled top-k, same results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_data(
    n: int, d: int, rng: np.random.Generator, centers: np.ndarray, common: np.ndarray
) -> np.ndarray:
    """Clustered unit vectors with a shared direction (embeddings are never isotropic)."""
    out = np.empty((n, d), dtype=np.float32)
    step = 20000
    for s in range(0, n, step):
        m = min(step, n - s)
        c = centers[rng.integers(0, centers.shape[0], m)]
        x = 0.6 * common + c + 0.8 * rng.standard_normal((m, d), dtype=np.float32) / np.sqrt(d)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def peak_mb() -> float:
    """Peak resident memory of this process (VmHWM; unlike ru_maxrss it is not inherited
    from the parent across fork/exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def child(step: str, data: Path, k: int, top: int, alpha: float, repeats: int, budget_mb: int) -> dict:
    g = np.load(data / "gallery.npy")
    r = np.load(data / "reference.npy", mmap_mode="r") if step.endswith("bias") else None
    q = np.load(data / "queries.npy") if step.endswith("search") else None
    if r is not None:
        r = np.array(r)  # load into RAM like every contender
    base_mb = peak_mb()
    res: dict = {"step": step}
    if step == "gemm-bias" or step == "gemm-search":
        a, b = (g, r) if step == "gemm-bias" else (q, g)
        qb, db = 4096, 4096
        buf = np.empty(qb * db, dtype=np.float32)

        def run():
            for i in range(0, a.shape[0], qb):
                x = a[i : i + qb]
                for j in range(0, b.shape[0], db):
                    y = b[j : j + db]
                    np.matmul(x, y.T, out=buf[: x.shape[0] * y.shape[0]].reshape(x.shape[0], y.shape[0]))

        res["seconds"], _ = best_of(run, repeats)
    elif step == "dehub-bias":
        import dehub

        res["seconds"], model = best_of(
            lambda: dehub.NNN(k=k, alpha=alpha).fit(g, r, memory_budget=budget_mb << 20), repeats
        )
        np.save(data / "dehub_means.npy", model.mean_topk())
    elif step == "dehub-search":
        import dehub

        model = dehub.NNN(k=k, alpha=alpha)
        # search cost alone: restore the cached statistics computed by dehub-bias
        means = np.load(data / "dehub_means.npy")
        model.topk_scores_ = np.repeat(means[:, None], k, axis=1)  # same mean, same bias
        model.topk_ids_ = np.zeros((g.shape[0], k), dtype=np.int64)
        model.fitted_k_ = k
        model.gallery_ = g
        res["seconds"], (s, i) = best_of(lambda: model.search(q, top, memory_budget=budget_mb << 20), repeats)
        np.save(data / "dehub_ids.npy", i)
    elif step in ("nnn-bias", "nnn-search"):
        import torch
        from nnn import NNNRanker, NNNRetriever

        torch.set_num_threads(os.cpu_count() or 1)
        batch = 1024
        if step == "nnn-bias":
            res["seconds"], ranker = best_of(
                lambda: NNNRanker(
                    NNNRetriever(g.shape[1]), g, r, alternate_ks=k, batch_size=batch, alternate_weight=alpha
                ),
                repeats,
            )
            np.save(data / "nnn_means.npy", ranker.alignment_means.numpy().ravel())
        else:
            ranker = NNNRanker.__new__(NNNRanker)
            ranker.retriever = NNNRetriever(g.shape[1])
            ranker.alternate_weight, ranker.batch_size, ranker.alternate_ks = alpha, batch, k
            ranker.device = "cpu"
            ranker.torch_retrieval_embeds = torch.tensor(g)
            ranker.alignment_means = torch.tensor(np.load(data / "nnn_means.npy")[:, None])
            res["seconds"], (s, i) = best_of(lambda: ranker.search(q, top), repeats)
            np.save(data / "nnn_ids.npy", i)
        res["batch_size"] = batch
    else:
        raise SystemExit(f"unknown step {step}")
    res["peak_mb"] = peak_mb()
    res["inputs_mb"] = base_mb
    return res


def paired(
    g: np.ndarray, r: np.ndarray, q: np.ndarray, k: int, top: int, alpha: float, pairs: int, budget_mb: int
) -> dict:
    """In one process, each dehub step right after its bare GEMM, ``pairs`` times: the
    ratio of each pair, so a slow phase of a shared VM (seconds long) hits both sides of
    a pair alike. Returns the per-pair ratios and seconds."""
    import dehub

    def gemm(a: np.ndarray, b: np.ndarray) -> None:
        buf = np.empty(4096 * 4096, dtype=np.float32)
        for i in range(0, a.shape[0], 4096):
            x = a[i : i + 4096]
            for j in range(0, b.shape[0], 4096):
                y = b[j : j + 4096]
                np.matmul(x, y.T, out=buf[: x.shape[0] * y.shape[0]].reshape(x.shape[0], y.shape[0]))

    budget = budget_mb << 20
    model = dehub.NNN(k=k, alpha=alpha).fit(g, r, memory_budget=budget)  # warm-up, and the model searched
    out: dict = {"bias": [], "search": []}
    for p in range(pairs):
        t = time.perf_counter()
        gemm(g, r)
        t_gemm = time.perf_counter() - t
        t = time.perf_counter()
        dehub.NNN(k=k, alpha=alpha).fit(g, r, memory_budget=budget)
        t_dehub = time.perf_counter() - t
        out["bias"].append((t_gemm, t_dehub))
        if q.shape[0]:
            t = time.perf_counter()
            gemm(q, g)
            t_gemm = time.perf_counter() - t
            t = time.perf_counter()
            model.search(q, top, memory_budget=budget)
            t_dehub = time.perf_counter() - t
            out["search"].append((t_gemm, t_dehub))
        print(
            f"  pair {p + 1}: bias {out['bias'][-1][1] / out['bias'][-1][0]:.3f}"
            + (f"  search {out['search'][-1][1] / out['search'][-1][0]:.3f}" if q.shape[0] else ""),
            flush=True,
        )
    return out


def machine() -> dict:
    """CPU model, caches, load (dehub.engine.hardware) and the block sizes derived from them."""
    from dehub.engine._blas import blas_controllable
    from dehub.engine.hardware import (
        database_block_rows,
        describe_machine,
        score_tile_bytes,
        selection_workers,
    )
    from dehub.engine.topk import kernel_isa

    return {
        **describe_machine(),
        "score_tile_bytes": score_tile_bytes(),
        "database_block_rows": database_block_rows(),
        "selection_workers": selection_workers(),
        "topk_kernel": kernel_isa(),
        "single_threaded_blas_workers": blas_controllable(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gallery", type=int, default=5000)
    ap.add_argument("--reference", type=int, default=118000)
    ap.add_argument("--queries", type=int, default=25000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=128, help="NNN k (reference neighbours)")
    ap.add_argument("--top", type=int, default=10, help="results per query in search")
    ap.add_argument("--alpha", type=float, default=0.75)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--budget-mb", type=int, default=512, help="dehub memory budget")
    ap.add_argument("--small", action="store_true", help="gallery 1000, reference 20000, queries 5000")
    ap.add_argument("--skip-nnn-retrieval", action="store_true")
    ap.add_argument(
        "--numpy-selection",
        action="store_true",
        help="also time dehub with numpy's selection (DEHUB_KERNELS=0) in every round",
    )
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--paired",
        type=int,
        default=0,
        help="instead of the round robin: N pairs in one process, each dehub step right after its GEMM",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.data, a.k, a.top, a.alpha, a.repeats, a.budget_mb)))
        return
    if a.small:
        a.gallery, a.reference, a.queries = 1000, 20000, 5000
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((2000, a.dim), dtype=np.float32) / np.sqrt(a.dim)
    common = rng.standard_normal(a.dim).astype(np.float32)
    common /= np.linalg.norm(common)
    load_before = os.getloadavg()
    if a.paired:
        g = make_data(a.gallery, a.dim, rng, centers, common)
        r = make_data(a.reference, a.dim, rng, centers, common)
        q = make_data(a.queries, a.dim, rng, centers, common)
        res = paired(g, r, q, a.k, a.top, a.alpha, a.paired, a.budget_mb)
        info = machine()
        summary = {}
        for name, target in (("bias", 1.10), ("search", 1.30)):
            if not res[name]:
                continue
            t = np.array(res[name])
            ratios = t[:, 1] / t[:, 0]
            summary[name] = {
                "median_ratio": float(np.median(ratios)),
                "ratios": ratios.tolist(),
                "best_over_best": float(t[:, 1].min() / t[:, 0].min()),
                "seconds_gemm_dehub": t.tolist(),
                "target": target,
            }
            print(
                f"{name}: dehub / bare GEMM median of {len(ratios)} pairs {np.median(ratios):.3f} "
                f"(range {ratios.min():.3f}-{ratios.max():.3f}; best/best {summary[name]['best_over_best']:.3f}; "
                f"target <= {target})"
            )
        print(
            f"machine: {info['cpu_model']}, {os.cpu_count()} cores; selection: {info['topk_kernel'] or 'numpy'}"
        )
        if a.json:
            _write_json(a, info, [load_before[0], os.getloadavg()[0]], {"paired": summary})
        return
    numpy_sel = a.numpy_selection
    steps = ["gemm-bias", "dehub-bias"] + (["dehub-bias-numpy"] if numpy_sel else [])
    steps += [] if a.skip_nnn_retrieval else ["nnn-bias"]
    if a.queries:
        steps += ["gemm-search", "dehub-search"] + (["dehub-search-numpy"] if numpy_sel else [])
        steps += [] if a.skip_nnn_retrieval else ["nnn-search"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        print(
            f"generating data: gallery {a.gallery}, reference {a.reference}, queries {a.queries}, d={a.dim}",
            flush=True,
        )
        np.save(data / "gallery.npy", make_data(a.gallery, a.dim, rng, centers, common))
        np.save(data / "reference.npy", make_data(a.reference, a.dim, rng, centers, common))
        np.save(data / "queries.npy", make_data(max(a.queries, 1), a.dim, rng, centers, common))
        # Round robin: every step once per round, in its own process, best time kept. A
        # burst of load on the shared VM (seen to stretch one step by 1.5x for seconds)
        # then hits every contender alike instead of one step's whole sample.
        for rnd in range(a.repeats):
            for step in steps:
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    step,
                    "--data",
                    str(data),
                    "--k",
                    str(a.k),
                    "--top",
                    str(a.top),
                    "--alpha",
                    str(a.alpha),
                    "--repeats",
                    "1",
                    "--budget-mb",
                    str(a.budget_mb),
                ]
                env = dict(os.environ)
                if step.endswith("-numpy"):  # the same step with numpy's selection
                    cmd[cmd.index(step)] = step.removesuffix("-numpy")
                    env["DEHUB_KERNELS"] = "0"
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
                r = json.loads(out.strip().splitlines()[-1])
                prev = results.get(step)
                if prev is not None:
                    r["peak_mb"] = max(r["peak_mb"], prev["peak_mb"])
                    r["all_seconds"] = prev["all_seconds"] + [r["seconds"]]
                    r["seconds"] = min(r["seconds"], prev["seconds"])
                else:
                    r["all_seconds"] = [r["seconds"]]
                results[step] = r
                print(
                    f"  round {rnd + 1}: {step:<13} {r['all_seconds'][-1]:8.3f} s   peak RSS {r['peak_mb']:8.0f} MB "
                    f"(inputs loaded: {r['inputs_mb']:.0f} MB)",
                    flush=True,
                )
        for step in steps:
            r = results[step]
            print(f"  best of {a.repeats}: {step:<13} {r['seconds']:8.3f} s", flush=True)
        checks = {}
        if "nnn-bias" in results:
            dm, nm = np.load(data / "dehub_means.npy"), np.load(data / "nnn_means.npy")
            checks["bias_max_abs_diff_vs_nnn_retrieval"] = float(np.abs(dm - nm).max())
        if "nnn-search" in results:
            di, ni = np.load(data / "dehub_ids.npy"), np.load(data / "nnn_ids.npy")
            checks["search_top1_agreement_vs_nnn_retrieval"] = float(np.mean(di[:, 0] == ni[:, 0]))
    sec = {s: r["seconds"] for s, r in results.items()}
    load_after = os.getloadavg()
    info = machine()
    print()
    print(
        f"machine: {info['cpu_model']} ({platform.machine()}), {os.cpu_count()} cores, L2 {info['l2_bytes'] >> 10} KiB, "
        f"LLC {info['llc_bytes'] >> 20} MiB, Python {platform.python_version()}, numpy {np.__version__}; "
        f"load {load_before[0]:.2f} -> {load_after[0]:.2f}"
    )
    print(
        f"sizes: gallery {a.gallery}, reference {a.reference}, queries {a.queries}, d={a.dim}, k={a.k}, top={a.top}"
    )
    print(f"bias:   dehub / bare GEMM = {sec['dehub-bias'] / sec['gemm-bias']:.3f}   (target <= 1.10)")
    if "nnn-bias" in sec:
        print(
            f"        dehub / nnn-retrieval = {sec['dehub-bias'] / sec['nnn-bias']:.3f}   (target <= 1.00); "
            f"nnn-retrieval / GEMM = {sec['nnn-bias'] / sec['gemm-bias']:.3f}"
        )
        print(
            f"        peak RSS dehub {results['dehub-bias']['peak_mb']:.0f} MB vs nnn-retrieval "
            f"{results['nnn-bias']['peak_mb']:.0f} MB (inputs {results['dehub-bias']['inputs_mb']:.0f} MB, "
            f"budget {a.budget_mb} MB)"
        )
    if "dehub-search" in sec:
        print(
            f"search: dehub / bare GEMM = {sec['dehub-search'] / sec['gemm-search']:.3f}   (target <= 1.30)"
        )
        if "nnn-search" in sec:
            print(
                f"        dehub / nnn-retrieval = {sec['dehub-search'] / sec['nnn-search']:.3f}; "
                f"peak RSS dehub {results['dehub-search']['peak_mb']:.0f} MB vs nnn-retrieval "
                f"{results['nnn-search']['peak_mb']:.0f} MB"
            )
    per_round = {}
    for step in [s for s in steps if s.startswith("dehub-")]:
        base = "gemm-bias" if "bias" in step else "gemm-search"
        ratios = [
            x / y for x, y in zip(results[step]["all_seconds"], results[base]["all_seconds"], strict=True)
        ]
        per_round[step] = ratios
        print(f"per round: {step:<18} / {base}: {', '.join(f'{x:.3f}' for x in ratios)}")
    print(f"selection: compiled top-k {info['topk_kernel'] or 'not built'}")
    for name, v in checks.items():
        print(f"check: {name} = {v:.3g}")
    if a.json:
        ratios = {"bias_vs_gemm": sec["dehub-bias"] / sec["gemm-bias"]}
        if "dehub-search" in sec:
            ratios["search_vs_gemm"] = sec["dehub-search"] / sec["gemm-search"]
        if "nnn-search" in sec:
            ratios["search_vs_nnn_retrieval"] = sec["dehub-search"] / sec["nnn-search"]
        payload = {"ratios": ratios, "per_round_ratios": per_round, "results": results, "checks": checks}
        _write_json(a, info, [load_before[0], load_after[0]], payload)


def _write_json(a: argparse.Namespace, info: dict, load: list, payload: dict) -> None:
    """The run's arguments, date, machine and load, then its figures, to ``a.json``."""
    head = {
        "args": vars(a) | {"json": str(a.json)},
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": info,
        "load_1min_before_after": load,
    }
    a.json.write_text(json.dumps(head | payload, indent=2, default=str))


if __name__ == "__main__":
    main()
