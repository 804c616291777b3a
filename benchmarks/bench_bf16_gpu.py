"""bf16 bias at N x N on one GPU (issue 26, item 6): dehub's precision="bf16" path on a
CUDA device (bf16 pass on the GPU, exact fp32 re-score on the CPU with numpy, so the
scores are the CPU fp32 engine's bits), against the bare fp32 and bf16 GEMMs of the same
products on the same GPU (TF32 off), and an exactness check of a subset of rows against
the CPU fp32 engine. Writes $OUT/gpu_bf16.json after every step."""

import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
from dehub.engine import exact_search
from dehub.engine.lowp import LowpStats, bf16_search

N = int(os.environ.get("N", 1_000_000))
D = int(os.environ.get("D", 384))
K = int(os.environ.get("K", 10))
SUB = int(os.environ.get("SUB", 512))
DEV = os.environ.get("DEV", "cuda" if torch.cuda.is_available() else "cpu")
OUT = os.environ.get("OUT", "/tmp/lowp/out")
os.makedirs(OUT, exist_ok=True)
T0 = time.time()
rec = {"N": N, "d": D, "k": K, "subset_rows": SUB, "device": DEV}


def save():
    rec["elapsed_s"] = time.time() - T0
    with open(os.path.join(OUT, "gpu_bf16.json"), "w") as f:
        json.dump(rec, f, indent=1)
    print(json.dumps({k: v for k, v in rec.items() if k != "machine"}), flush=True)


def sh(c):
    try:
        return subprocess.run(c, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as e:
        return str(e)


rec["machine"] = {
    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    "torch": torch.__version__,
    "cpu": sh("grep -m1 'model name' /proc/cpuinfo"),
    "cpus": os.cpu_count(),
    "load": open("/proc/loadavg").read().strip(),
    "nvidia_smi": sh("nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader"),
    "python": platform.python_version(),
    "numpy": np.__version__,
}
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def sync():
    if DEV.startswith("cuda"):
        torch.cuda.synchronize()


def data(n, seed, centres=300):
    g = torch.Generator(device=DEV).manual_seed(seed)
    c = torch.randn(centres, D, generator=torch.Generator(device=DEV).manual_seed(12345), device=DEV)
    out = np.empty((n, D), np.float32)
    step = 1 << 17
    for a in range(0, n, step):
        b = min(a + step, n)
        lab = torch.randint(0, centres, (b - a,), generator=g, device=DEV)
        x = c[lab] * 0.6 + torch.randn(b - a, D, generator=g, device=DEV)
        out[a:b] = torch.nn.functional.normalize(x, dim=1).cpu().numpy()
    return out


t = time.time()
G = data(N, 1)
R = data(N, 2)
rec["data_s"] = time.time() - t
save()


def bare(dtype, qb=16384, db=65536):
    q = torch.from_numpy(G).to(DEV).to(dtype)
    x = torch.from_numpy(R).to(DEV).to(dtype)
    out = torch.empty((qb, db), dtype=dtype, device=DEV)
    sync()
    t = time.time()
    for a in range(0, N, qb):
        for b in range(0, N, db):
            qa, xb = q[a : a + qb], x[b : b + db]
            torch.mm(qa, xb.T, out=out[: qa.shape[0], : xb.shape[0]])
    sync()
    dt = time.time() - t
    del q, x, out
    torch.cuda.empty_cache() if DEV.startswith("cuda") else None
    return dt


rec["bare_bf16_gemm_s"] = bare(torch.bfloat16)
save()
rec["bare_fp32_gemm_s"] = bare(torch.float32)
rec["bare_bf16_over_fp32"] = rec["bare_bf16_gemm_s"] / rec["bare_fp32_gemm_s"]
save()

st = LowpStats()
t = time.time()
res = bf16_search(G, R, K, memory_budget=2 << 30, device=DEV, stats=st, progress=True, compiled=False)
rec["dehub_bf16_bias_s"] = time.time() - t
rec["dehub_bf16_over_bare_fp32_gemm"] = rec["dehub_bf16_bias_s"] / rec["bare_fp32_gemm_s"]
rec["candidates_per_row"] = st.n_candidates / N
rec["rescore_entries_per_row"] = st.n_rescore_pairs / N
rec["fp32_rows"] = st.n_fp32_rows
rec["returned"] = res is not None
save()

if res is not None:
    sub = np.random.default_rng(0).choice(N, SUB, replace=False)
    sub.sort()
    t = time.time()
    v, i = exact_search(G[sub], R, K)
    rec["cpu_fp32_subset_s"] = time.time() - t
    rec["subset_ids_identical"] = bool(np.array_equal(i, res[1][sub]))
    rec["subset_score_bits_identical"] = bool(np.array_equal(v.view(np.int32), res[0][sub].view(np.int32)))
    save()
print("done", time.time() - T0)
