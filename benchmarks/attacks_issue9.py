"""Issue 9: run every attack against one dehub and print what happens (before/after table).

    python benchmarks/attacks_issue9.py PYTHON [--pythonpath SRC] [--json OUT]

Each attack runs in a child process of ``PYTHON`` (with ``PYTHONPATH=SRC`` when given,
so a worktree's dehub wins), under ``RLIMIT_AS`` = what the child uses after importing
dehub + 2 GiB, and a 120 s timeout. The outcome is the child's last line: ``ok: ...``,
the exception's type and message, or the signal that killed it; with its peak RSS.
The crafted files come from ``tests/crafted_index.py`` (the documented layout only).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import numpy as np  # noqa: E402

import crafted_index as crafted  # noqa: E402

PRELUDE = r"""
import os, resource, sys, warnings, json, stat
import numpy as np
import dehub
from dehub import Index
def _vm():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (_vm() + (2 << 30), resource.RLIM_INFINITY))
warnings.simplefilter("ignore")
D = sys.argv[1]
def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
def unit(n, d, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
"""

ATTACKS: dict[str, str] = {  # name -> child code (D: the folder of crafted files)
    "memory bomb (4.5 MB file, 8 GiB declared)": "Index.load(D + '/bomb.dehub'); print('ok: loaded')",
    "JSON header nested 1,000 deep": "Index.load(D + '/deep.dehub'); print('ok: loaded')",
    "1 GiB header declared (sparse file)": "Index.load(D + '/huge.dehub'); print('ok: loaded')",
    "64 MiB real JSON header": "Index.load(D + '/big_header.dehub'); print('ok: loaded')",
    "shape product overflows int64": "Index.load(D + '/overflow.dehub'); print('ok: loaded')",
    "re-checksummed int64 gallery": "i = Index.load(D + '/int_gallery.dehub'); print('ok: loaded, gallery', i.model.gallery_.dtype)",
    "re-checksummed 3-D gallery": "i = Index.load(D + '/3d_gallery.dehub'); print('ok: loaded, gallery', i.model.gallery_.shape)",
    "re-checksummed NaN gallery": "i = Index.load(D + '/nan_gallery.dehub'); print('ok: loaded, NaN:', bool(np.isnan(i.model.gallery_).any()))",
    "stored duplicate ids": "Index.load(D + '/dup_ids.dehub'); print('ok: loaded')",
    "stored negative ids": "i = Index.load(D + '/neg_ids.dehub'); print('ok: loaded, ids', i.ids.tolist())",
    "NaN in stored NNN statistics": "Index.load(D + '/nan_stats.dehub'); print('ok: loaded')",
    "header without format_version: dehub info": (
        "from dehub.cli import main\nrc = main(['info', D + '/nofv.dehub'])\nprint('ok: exit', rc)"
    ),
    "dehub info --verify path (Index.verify_file)": (
        "r = Index.verify_file(D + '/good.dehub'); print('ok:', {k: r[k] for k in ('ok', 'verified_bytes')})"
    ),
    "truncated mmap'd file, then search": (
        "import shutil; shutil.copy(D + '/big_good.dehub', D + '/trunc.dehub')\n"
        "i = Index.load(D + '/trunc.dehub', mmap=True)\n"
        "q = np.asarray(i.model.gallery_[:2]).copy(); i.search(q, 3)\n"
        "os.truncate(D + '/trunc.dehub', 200)\n"
        "i.search(q, 3); print('ok: searched')"
    ),
    "uint64 id 2**64-1": (
        "m = dehub.Plain().fit(unit(3, 4), unit(5, 4))\n"
        "i = Index(m, ids=np.array([0, 1, 2**64 - 1], np.uint64)); print('ok: ids', i.ids.tolist())"
    ),
    "negative ids": "m = dehub.Plain().fit(unit(3, 4), unit(5, 4))\ni = Index(m, ids=[-5, 0, 1]); print('ok: ids', i.ids.tolist())",
    "remove([10.9])": (
        "i = Index.build(unit(20, 4), unit(30, 4), k=3, ids=np.arange(20) + 5)\n"
        "i.remove([10.9]); print('ok: removed; 10 still there:', 10 in i.ids)"
    ),
    "add() past 2**63-1": (
        "i = Index.build(unit(3, 4), unit(30, 4), k=3, ids=[0, 1, 2**63 - 1], keep_reference=True)\n"
        "i.add(unit(2, 4, 1)); print('ok: ids', i.ids.tolist())"
    ),
    "search(queries, k=10**9)": (
        "i = Index.build(unit(50, 8), unit(60, 8), k=4)\n"
        "s, ids = i.search(unit(15, 8, 2), 10**9); print('ok: shape', ids.shape)"
    ),
    "id-mapping scratch (tracemalloc peak / output bytes)": (
        "import tracemalloc\n"
        "i = Index.build(unit(200, 8), unit(60, 8), k=4, ids=np.arange(200) * 3)\n"
        "rows = np.random.default_rng(0).integers(0, 200, (50000, 40)); rows[:, -2:] = -1\n"
        "sc = np.zeros(rows.shape, np.float32); nb = rows.nbytes\n"
        "i.model.search = lambda q, k, **kw: (sc, rows)\n"
        "tracemalloc.start(); i.search(unit(1, 8), 40); peak = tracemalloc.get_traced_memory()[1]\n"
        "print(f'ok: peak {peak / nb:.2f} x output')"
    ),
    "save through a symlink": (
        "import pathlib; real = pathlib.Path(D) / 'real.dehub'; link = pathlib.Path(D) / 'link.dehub'\n"
        "for p in (real, link):\n    p.unlink(missing_ok=True)\n"
        "i = Index.build(unit(10, 4), unit(30, 4), k=3); i.save(real); link.symlink_to(real); i.save(link)\n"
        "print('ok: link still a symlink:', link.is_symlink())"
    ),
    "re-save a 0600 file": (
        "p = D + '/mode.dehub'; i = Index.build(unit(10, 4), unit(30, 4), k=3); i.save(p); os.chmod(p, 0o600)\n"
        "os.umask(0o022); i.save(p); print('ok: mode', oct(stat.S_IMODE(os.stat(p).st_mode)))"
    ),
    "stale temp of a killed save": (
        "p = D + '/stale.dehub'; i = Index.build(unit(10, 4), unit(30, 4), k=3); i.save(p)\n"
        "open(D + '/.stale.dehub.0123456789ab.tmp', 'wb').write(b'half')\n"
        "i.save(p); print('ok: stale temp left:', os.path.exists(D + '/.stale.dehub.0123456789ab.tmp'))"
    ),
    "5,000 shards, RLIMIT_NOFILE 1024": (
        "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))\n"
        "from dehub.datasets.shards import ShardedArray\n"
        "x = ShardedArray(D + '/shards'); a = np.asarray(x); print('ok: read', a.shape)"
    ),
}


def prepare(d: Path) -> None:
    rng = np.random.default_rng(0)
    g = rng.standard_normal((12, 4)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    crafted.memory_bomb(d / "bomb.dehub")
    crafted.deep_json(d / "deep.dehub")
    crafted.declared_huge_header(d / "huge.dehub")
    crafted.real_big_header(d / "big_header.dehub", 64 << 20)
    crafted.shape_overflow(d / "overflow.dehub")
    crafted.plain_index(d / "int_gallery.dehub", np.arange(48, dtype=np.int64).reshape(12, 4))
    crafted.plain_index(d / "3d_gallery.dehub", g.reshape(12, 4, 1))
    nan = g.copy()
    nan[3, 1] = np.nan
    crafted.plain_index(d / "nan_gallery.dehub", nan)
    crafted.plain_index(d / "dup_ids.dehub", g, np.array([0] * 12, np.int64))
    crafted.plain_index(d / "neg_ids.dehub", g, -np.arange(1, 13, dtype=np.int64))
    crafted.plain_index(d / "nofv.dehub", g, format_version=False)
    crafted.plain_index(d / "good.dehub", g)
    big = rng.standard_normal((10000, 16)).astype(np.float32)
    crafted.plain_index(d / "big_good.dehub", big / np.linalg.norm(big, axis=1, keepdims=True))
    scores = np.sort(rng.random((12, 3)).astype(np.float32), axis=1)[:, ::-1].copy()
    scores[0, 0] = np.nan
    crafted.craft(
        d / "nan_stats.dehub",
        crafted.index_header("nnn", params={"k": 3, "alpha": 0.75}, n_reference=20),
        [
            ("gallery", g),
            ("ids", np.arange(12, dtype=np.int64)),
            ("model.topk_scores", scores),
            ("model.topk_ids", np.tile(np.arange(3, dtype=np.int64), (12, 1))),
        ],
    )
    (d / "shards").mkdir()
    for j in range(5000):
        np.save(d / "shards" / f"e_{j}.npy", g[:2])


def run(python: str, pythonpath: str | None, d: Path) -> dict[str, dict]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    results = {}
    for name, body in ATTACKS.items():
        code = (
            PRELUDE
            + "\ntry:\n"
            + textwrap.indent(body, "    ")
            + (
                "\nexcept BaseException as exc:\n"
                "    print(f'{type(exc).__name__}: {str(exc)[:160]}')\n"
                "print('RSS_MB', rss_mb())\n"
            )
        )
        try:
            p = subprocess.run(
                [python, "-c", code, str(d)], capture_output=True, text=True, timeout=120, env=env, cwd=d
            )
            lines = [x for x in p.stdout.strip().splitlines() if x]
            rss = next((x.split()[1] for x in lines if x.startswith("RSS_MB")), "?")
            outcome = next((x for x in reversed(lines) if not x.startswith("RSS_MB")), "")
            if p.returncode < 0:
                outcome = f"killed by {signal.Signals(-p.returncode).name} (exit {p.returncode})"
            elif p.returncode:
                last = p.stderr.strip().splitlines()[-1:] or [""]
                outcome = f"exit {p.returncode}: {last[0][:160]}"
        except subprocess.TimeoutExpired:
            outcome, rss = "timeout after 120 s", "?"
        results[name] = {"outcome": outcome.replace(str(d), "<dir>"), "peak_rss_mb": rss}
        print(f"{name:55s} | {results[name]['outcome'][:150]} | {rss} MB", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("python")
    ap.add_argument("--pythonpath")
    ap.add_argument("--json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        prepare(d)
        res = run(args.python, args.pythonpath, d)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
