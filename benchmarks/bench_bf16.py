"""precision="bf16" vs the fp32 engine vs the bare numpy fp32 GEMM (issue 13).

Run it under the benchmark lock of a shared machine::

    flock /tmp/dehub-bench.lock python benchmarks/bench_bf16.py --gallery 5000 --reference 118000 \
        --dim 512 --k 128 --json benchmarks/results/bf16_coco_amx.json
    python benchmarks/bench_bf16.py --device cuda ...   # unchanged on a GPU machine

Measures, in one process, ``--rounds`` rounds of every variant in turn: the bare fp32 GEMM
of the same pairs (numpy, blocked into a reused buffer: the bound no fp32 engine beats;
timed as one call with BLAS's own threads and as one worker per CPU with one BLAS thread
each, the faster of the two in each round being the denominator),
torch's bare bf16 GEMM, the fp32 engine's bias (``exact_search(gallery, reference, k)``),
``precision="auto"`` (after its first call, which measures and is timed apart) and the
bf16 engine's bias; each ratio is the median of the per-round ratios (never best/best).
The same for a corrected search (``--search-queries`` queries against the reference-sized
set with an offset). Checks that bf16 and auto return the fp32 ids and score bits, counts
the candidates re-scored. Records the CPU model, bf16 flags, caches, torch's CPU
capability and the load.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dehub.engine import exact_search
from dehub.engine.accel import cpu_bf16_flags, import_torch, resolve_precision
from dehub.engine.lowp import LowpStats, bf16_search


def machine() -> dict:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception as exc:  # the record is best effort
            return f"unavailable: {exc}"

    from dehub.engine.hardware import describe_machine

    torch = import_torch()
    return {
        **describe_machine(),
        "caches": sh("lscpu | grep -i 'cache'"),
        "cpuinfo_bf16_flags": list(cpu_bf16_flags()),
        "torch": None if torch is None else torch.__version__,
        "torch_cpu_capability": None if torch is None else torch.backends.cpu.get_cpu_capability(),
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "cuda": None if torch is None or not torch.cuda.is_available() else torch.cuda.get_device_name(0),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "auto_resolves_to": resolve_precision("auto"),
    }


def load() -> str:
    return open("/proc/loadavg").read().strip()


def data(n: int, d: int, seed: int, centres: int = 64) -> np.ndarray:
    """Clustered unit vectors (scores spread like real embeddings), built in blocks."""
    rng = np.random.default_rng(seed)
    c = np.random.default_rng(12345).standard_normal((centres, d)).astype(np.float32)
    out = np.empty((n, d), np.float32)
    for a in range(0, n, 65536):
        b = min(a + 65536, n)
        x = c[rng.integers(0, centres, b - a)] * 0.6 + rng.standard_normal((b - a, d)).astype(np.float32)
        out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def bare_gemm(q: np.ndarray, x: np.ndarray, block: int = 256) -> float:
    buf = np.empty((block, x.shape[0]), np.float32)
    for a in range(0, q.shape[0], block):
        qb = q[a : a + block]
        np.matmul(qb, x.T, out=buf[: qb.shape[0]])
    return float(buf[0, 0])


def bare_gemm_workers(q: np.ndarray, x: np.ndarray, block: int = 512) -> float:
    """The same GEMM as the engine runs it: one worker thread per CPU, one BLAS thread
    each, contiguous query ranges in 512-row blocks. On a loaded machine a multi-threaded
    OpenBLAS call can collapse (its threads wait for one another when another process holds
    a core), so the bare GEMM is timed both ways and the faster of the two in each round is
    the denominator (the conservative one for bf16)."""
    from dehub.engine._workers import parallel_scope

    with parallel_scope() as workers:
        parts = workers.split(q.shape[0], -(-q.shape[0] // workers.n))

        def run(rows: slice) -> float:
            buf = np.empty((block, x.shape[0]), np.float32)
            for a in range(rows.start, rows.stop, block):
                qb = q[a : min(a + block, rows.stop)]
                np.matmul(qb, x.T, out=buf[: qb.shape[0]])
            return float(buf[0, 0])

        return sum(workers.map(run, parts))


def bare_gemm_torch(torch, q, x, dtype, device, block: int = 1024) -> float:
    qt = torch.from_numpy(q).to(device).to(dtype)
    xt = torch.from_numpy(x).to(device).to(dtype)
    for a in range(0, qt.shape[0], block):
        s = torch.mm(qt[a : a + block], xt.T)
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    return float(s[0, 0])


def step(rec: dict, key: str, seconds: float) -> None:
    """Record one measured step and print it at once (a long run shows where it is)."""
    rec[key] = seconds
    print(f"  {rec['case']}: {key} = {seconds:.2f} (load {load()})", flush=True)


def case(name: str, q, x, k, offset, rounds, device, bare_torch: bool = True) -> dict:
    """One shape, every variant once per round, in turn (the machine's load drifts:
    per-round ratios against the same round's bare fp32 GEMM, then their medians)."""
    from dehub.engine import tuning

    torch = import_torch()
    rec: dict = {"case": name, "n_queries": q.shape[0], "n_database": x.shape[0], "dim": q.shape[1], "k": k}
    rec["load_before"] = load()
    # "auto": its first use measures both on a sample (once per machine and shape class)
    t0 = time.perf_counter()
    exact_search(q, x, k, offset=offset, precision="auto", device=device)
    step(rec, "auto_first_call_s", time.perf_counter() - t0)
    rec["auto_choice"] = tuning.tuning_report()["choices"]
    variants = {
        "bare_numpy_fp32_gemm_s": lambda: bare_gemm(q, x),
        "bare_numpy_fp32_gemm_workers_s": lambda: bare_gemm_workers(q, x),
        "fp32_engine_s": lambda: exact_search(q, x, k, offset=offset),
        "auto_engine_s": lambda: exact_search(q, x, k, offset=offset, precision="auto", device=device),
        "bf16_engine_s": lambda: bf16_search(
            q,
            x,
            k,
            offset=offset,
            memory_budget=512 * 2**20,
            device=device,
            stats=st,
            fallback=lambda r: exact_search(q[r], x, k, offset=offset),
        ),
    }
    if torch is not None and bare_torch:
        variants["bare_torch_bf16_gemm_s"] = lambda: bare_gemm_torch(torch, q, x, torch.bfloat16, device)
    times: dict = {key: [] for key in variants}
    outs: dict = {}
    for r in range(rounds):
        for key, fn in variants.items():
            st = LowpStats()
            t0 = time.perf_counter()
            outs[key] = fn()
            times[key].append(time.perf_counter() - t0)
        print(
            f"  {name} round {r}: "
            + ", ".join(f"{a}={b[-1]:.2f}" for a, b in times.items())
            + f" (load {load()})",
            flush=True,
        )
    rec["times"] = times
    # per round, the faster of the two bare fp32 GEMMs (one call with BLAS's threads, or
    # one worker per CPU with one BLAS thread each): the conservative denominator
    bare = np.minimum(times["bare_numpy_fp32_gemm_s"], times["bare_numpy_fp32_gemm_workers_s"])
    rec["bare_fp32_gemm_s_per_round"] = bare.tolist()
    f32 = np.array(times["fp32_engine_s"])
    for key, ts in times.items():
        rec[f"median_{key}"] = float(np.median(ts))
        rec[f"{key[:-2]}_over_bare_fp32_gemm"] = float(np.median(np.array(ts) / bare))
    rec["bf16_over_fp32_engine"] = float(np.median(np.array(times["bf16_engine_s"]) / f32))
    rec["auto_over_fp32_engine"] = float(np.median(np.array(times["auto_engine_s"]) / f32))
    v, i = outs["fp32_engine_s"]
    for key in ("bf16_engine_s", "auto_engine_s"):
        v2, i2 = outs[key]
        rec[f"{key[:-2]}_ids_identical"] = bool(np.array_equal(i, i2))
        rec[f"{key[:-2]}_scores_bit_identical"] = bool(np.array_equal(v.view(np.int32), v2.view(np.int32)))
    st = LowpStats()
    bf16_search(
        q,
        x,
        k,
        offset=offset,
        memory_budget=512 * 2**20,
        device=device,
        stats=st,
        fallback=lambda r: exact_search(q[r], x, k, offset=offset),
    )
    rec["candidate_fraction"] = st.n_candidates / st.n_pairs
    rec["candidates_per_row"] = st.n_candidates / q.shape[0]
    rec["rescore_gemm_fraction"] = st.n_rescore_pairs / st.n_pairs
    rec["fp32_rows"] = st.n_fp32_rows
    rec["peak_rss_mib_so_far"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rec["load_after"] = load()
    print(json.dumps({a: b for a, b in rec.items() if a != "times"}), flush=True)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gallery", type=int, default=5000)
    ap.add_argument("--reference", type=int, default=118000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=128)
    ap.add_argument("--search-queries", type=int, default=5000)
    ap.add_argument("--search-k", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every variant in turn")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument(
        "--no-bare-torch", action="store_true", help="skip torch's bare bf16 GEMM (saves its time)"
    )
    args = ap.parse_args(argv)
    # a fresh tuning cache: "auto" measures on its first use here, as on a new machine
    os.environ.setdefault("DEHUB_CACHE_DIR", tempfile.mkdtemp(prefix="dehub-bench-tuning-"))
    rec = {"machine": machine(), "args": vars(args), "cases": []}
    print(json.dumps(rec["machine"]), flush=True)
    g = data(args.gallery, args.dim, 1)
    r = data(args.reference, args.dim, 2)
    rec["cases"].append(case("bias", g, r, args.k, None, args.rounds, args.device, not args.no_bare_torch))
    _write(args.json, rec)  # the bias case survives a run stopped during the search case
    qs = data(args.search_queries, args.dim, 3)
    off = (0.75 * np.random.default_rng(4).random(args.reference) * 0.4).astype(np.float32)
    rec["cases"].append(
        case("search", qs, r, args.search_k, off, args.rounds, args.device, not args.no_bare_torch)
    )
    _write(args.json, rec)
    return 0


def _write(path: str | None, rec: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
