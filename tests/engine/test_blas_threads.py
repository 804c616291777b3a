"""The engine owns its BLAS setting from any thread.

OpenBLAS obeys ``openblas_set_num_threads`` only from the thread that first called it
(measured with 0.3.31): a search started from another thread used to run two engine
workers on a two-thread BLAS. :mod:`dehub.engine._blas` makes every change from its own
long-lived thread. Each check runs in a fresh interpreter, so which thread touched BLAS
first is under the test's control.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("threadpoolctl")

SRC = str(Path(__file__).resolve().parents[2] / "src")

_SCRIPT = r"""
import json, sys, threading
import numpy as np
import dehub.engine.exact as exact
from dehub.engine import _blas

from dehub.engine.hardware import selection_workers
if not _blas.blas_controllable() or selection_workers() < 2:
    print(json.dumps({"skip": "no controllable BLAS or one CPU (no engine workers)"})); sys.exit(0)
first = sys.argv[1]
rng = np.random.default_rng(0)
db = rng.standard_normal((20000, 64)).astype(np.float32)
q = rng.standard_normal((64, 64)).astype(np.float32)
seen = {}
original = exact._Blocked.run

from threadpoolctl import threadpool_info

def blas_threads():
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

def spy(self, rows, cols):  # runs inside each engine worker
    seen.setdefault(threading.current_thread().name, set()).update(blas_threads())
    return original(self, rows, cols)

exact._Blocked.run = spy
out = {}

def search(tag):
    s, i = exact.exact_search(q, db, 10, memory_budget=2**20)  # blocked: worker threads
    out[tag] = (s.tobytes().hex(), i.tobytes().hex())

if first == "thread":  # a second thread touches BLAS first, then the main thread searches
    t = threading.Thread(target=search, args=("second",)); t.start(); t.join()
    search("main")
else:
    search("main")
    t = threading.Thread(target=search, args=("second",)); t.start(); t.join()
print(json.dumps({
    "same_bits": out["main"] == out["second"],
    "worker_blas_threads": sorted({n for v in seen.values() for n in v}),
    "workers": len(seen),
    "after": blas_threads(),
    "before": int(sys.argv[2]),
}))
"""


@pytest.mark.parametrize("first", ["main", "thread"])
def test_same_search_from_two_threads_sees_one_blas_thread_per_worker(first):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env["OPENBLAS_NUM_THREADS"] = "2"  # a multi-threaded BLAS to limit, on any machine
    r = subprocess.run(
        [sys.executable, "-c", _SCRIPT, first, "2"], capture_output=True, text=True, env=env, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if "skip" in res:
        pytest.skip(res["skip"])
    assert res["same_bits"]
    assert res["worker_blas_threads"] == [1], res  # every worker of both searches: one BLAS thread
    assert res["after"] == [2], res  # restored after the last search
