"""Memory bounds of loading and searching (issue 9), under a real ``RLIMIT_AS``.

Each case runs in a child process that imports dehub, then caps its address space at
what it already uses plus a small allowance. A request beyond the allowance raises
``MemoryError`` there, so the bound is enforced by the kernel, not estimated. Before
the fix, the memory-bomb file asked for 8 GiB and the k = 1e9 search for 74.5 GiB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import crafted_index as crafted

resource = pytest.importorskip("resource")

_CHILD = r"""
import json, os, resource, sys, warnings
import numpy as np
import dehub
from dehub import Index, IndexFormatError

def vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize")

case = json.loads(sys.argv[1])
pre = None
if case.get("preload"):
    pre = Index.load(case["path"])
allow = case["allow_mb"] << 20
resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + allow, resource.RLIM_INFINITY))
out = {}
try:
    if case["op"] == "load":
        idx = Index.load(case["path"], mmap=case.get("mmap", False))
        out["loaded"] = [idx.n_items, idx.dim]
    elif case["op"] == "search":
        q = np.asarray(pre.model.gallery_[:8]).copy()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            s, ids = pre.search(q, case["k"])
        out["shape"] = list(ids.shape)
        out["warnings"] = [str(x.message) for x in w]
    elif case["op"] == "header":
        out["header"] = sorted(Index.describe_file(case["path"]))
except IndexFormatError as exc:
    out["IndexFormatError"] = str(exc)
except MemoryError:
    out["MemoryError"] = True
print(json.dumps(out))
"""

_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run(case: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(case)],
        capture_output=True,
        text=True,
        timeout=900,
        env=_ENV,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_memory_bomb_under_a_64_mib_allowance(tmp_path):
    """4.5 MB on disk, 8 GiB declared: refused from the header, no allocation."""
    path = crafted.memory_bomb(tmp_path / "bomb.dehub")
    out = _run({"op": "load", "path": str(path), "allow_mb": 64})
    assert "without overlap" in out.get("IndexFormatError", ""), out
    out = _run({"op": "header", "path": str(path), "allow_mb": 64})
    assert "without overlap" in out.get("IndexFormatError", ""), out


def test_declared_1_gib_header_under_a_64_mib_allowance(tmp_path):
    path = crafted.declared_huge_header(tmp_path / "huge.dehub")
    out = _run({"op": "load", "path": str(path), "allow_mb": 64})
    assert "exceeds the limit" in out.get("IndexFormatError", ""), out


def test_search_with_k_1e9_under_a_64_mib_allowance(tmp_path, rng, unit):
    from dehub import Index

    path = Index.build(unit(rng, 50, 8), unit(rng, 60, 8), k=4).save(tmp_path / "i.dehub")
    out = _run({"op": "search", "path": str(path), "preload": True, "k": 10**9, "allow_mb": 64})
    assert out.get("shape") == [8, 50], out
    assert any("k=1000000000 exceeds the 50 gallery items" in w for w in out["warnings"])


@pytest.mark.parametrize("mmap", [False, True])
def test_load_needs_about_the_file_size(tmp_path, mmap):
    """A 48 MiB index loads within its file size + 40 MiB of address space (the copy, or
    the mapping, which counts towards RLIMIT_AS too), and fails cleanly with less."""
    from dehub import Index, Plain

    rng = np.random.default_rng(0)
    g = rng.standard_normal((48 * 1024, 256)).astype(np.float32)  # 48 MiB
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    path = Index(Plain().fit(g, g[:10])).save(tmp_path / "big.dehub")
    size_mb = path.stat().st_size >> 20
    allow = size_mb + 40
    out = _run({"op": "load", "path": str(path), "mmap": mmap, "allow_mb": allow})
    assert out.get("loaded") == [48 * 1024, 256], out
    if not mmap:  # and the bound is tight: without room for the copy it fails cleanly
        out = _run({"op": "load", "path": str(path), "allow_mb": size_mb // 2})
        assert out.get("MemoryError") is True, out


def test_escape_heavy_header_is_scanned_in_bounded_memory(tmp_path):
    """6 MiB of JSON escapes: the depth scan keeps no per-character state (a regex did)."""
    path = crafted.plain_index(
        tmp_path / "esc.dehub",
        np.eye(4, dtype=np.float32),
        mutate=lambda h: h.update(metadata={"note": "\\" * (3 << 20)}),
    )
    out = _run({"op": "load", "path": str(path), "allow_mb": 96})
    assert out.get("loaded") == [4, 4], out
