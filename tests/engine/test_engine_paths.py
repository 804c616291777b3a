"""The exact engine's paths agree bit for bit: dense small batch, blocked, threaded selection;
the one-shot selection matches a full sort; sizes derived from the machine are sane."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dehub.engine import exact as exact_mod
from dehub.engine import exact_search, hardware, select_topk
from reference_nnn import assert_topk_match, ref_topk


@pytest.mark.parametrize(("nq", "nd", "k"), [(1, 5000, 10), (16, 3000, 7), (64, 700, 50), (5, 30, 40)])
def test_dense_small_batch_equals_blocked_bit_for_bit(rng, nq, nd, k):
    q = rng.standard_normal((nq, 24)).astype(np.float32)
    x = rng.standard_normal((nd, 24)).astype(np.float32)
    off = rng.random(nd).astype(np.float32)
    assert exact_mod._dense_fits(nq, x, np.dtype(np.float32), exact_mod.DEFAULT_MEMORY_BUDGET)
    for o in (None, off):
        v, i = exact_search(q, x, k, offset=o)  # dense path
        bv, bi = exact_search(q, x, k, offset=o, database_block=512)  # blocked path
        np.testing.assert_array_equal(i, bi)
        np.testing.assert_array_equal(v, bv)
        s = q.astype(np.float64) @ x.astype(np.float64).T - (0 if o is None else o)
        rv, ri = ref_topk(s, k)
        assert_topk_match(v, i, rv, ri, s, atol=1e-5)


def test_dense_path_ties_go_to_the_smaller_id(rng):
    q = np.round(rng.standard_normal((9, 8)) * 2).astype(np.float32)
    x = np.round(rng.standard_normal((4000, 8)) * 2).astype(np.float32)  # many equal scores
    v, i = exact_search(q, x, 25)
    s = q.astype(np.float64) @ x.astype(np.float64).T
    rv, ri = ref_topk(s, 25)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(v, rv.astype(np.float32))


def test_dense_path_is_skipped_outside_the_budget(rng):
    x = np.zeros((1000, 4), np.float32)
    assert not exact_mod._dense_fits(10, x, np.dtype(np.float32), 1000 * 10 * 9 - 1)
    assert not exact_mod._dense_fits(exact_mod.SMALL_BATCH_ROWS + 1, x, np.dtype(np.float32), 2**40)
    assert not exact_mod._dense_fits(10, x.astype(np.float16), np.dtype(np.float32), 1000 * 10 * 9)


def test_threaded_selection_equals_one_thread(rng, monkeypatch):
    q = rng.standard_normal((500, 16)).astype(np.float32)
    x = rng.standard_normal((4 * 2048 + 55, 16)).astype(np.float32)
    off = rng.random(x.shape[0]).astype(np.float32)
    kw = {"offset": off, "database_block": 2048, "query_block": 300}
    monkeypatch.setattr(exact_mod, "selection_workers", lambda: 3)
    v3, i3 = exact_search(q, x, 30, **kw)
    monkeypatch.setattr(exact_mod, "selection_workers", lambda: 1)
    v1, i1 = exact_search(q, x, 30, **kw)
    np.testing.assert_array_equal(i3, i1)
    np.testing.assert_array_equal(v3, v1)


@pytest.mark.parametrize("k", [1, 3, 20, 60])
@pytest.mark.parametrize("with_ids", [False, True])
def test_select_topk_matches_a_full_sort(rng, k, with_ids):
    s = rng.integers(-4, 5, size=(13, 50)).astype(np.float32)  # many ties
    ids = None
    if with_ids:
        ids = np.stack([rng.permutation(200)[:50] for _ in range(13)]).astype(np.int64)
        ids[:, -5:] = -1  # padding
        s[:, -5:] = -np.inf
    v, i = select_topk(s, k, ids)
    assert v.shape == i.shape == (13, k) and i.dtype == np.int64
    for r in range(13):
        cols = np.arange(50) if ids is None else ids[r]
        keep = cols >= 0
        order = np.lexsort((cols[keep], -s[r, keep].astype(np.float64)))[:k]
        want_i = np.full(k, -1)
        want_i[: order.size] = cols[keep][order]
        np.testing.assert_array_equal(i[r], want_i)
        np.testing.assert_array_equal(v[r][: order.size], s[r, keep][order])
        assert np.all(np.isneginf(v[r][order.size :]))


def test_cache_sizes_from_sysfs_layout(tmp_path):
    for idx, (level, kind, size) in enumerate(
        [(1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "2048K"), (3, "Unified", "260M")]
    ):
        d = tmp_path / f"index{idx}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    sizes = hardware._from_sysfs(tmp_path)
    assert sizes == hardware.CacheSizes(48 * 2**10, 2 * 2**20, 260 * 2**20, "sysfs")
    assert hardware._from_sysfs(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("llc", "workers", "l2", "tile", "block"),
    [
        (64 * 2**20, 1, 8 * 2**20, 16 * 2**20, 2048),  # a big L2: the 16 MiB cap
        (32 * 2**20, 2, 2**19, 2 * 2**20, 2048),  # AMD EPYC (512 KiB L2, 32 MiB L3), 2 workers
        (260 * 2**20, 2, 2 * 2**20, 8 * 2**20, 2048),  # the Xeon (2 MiB L2, 260 MiB L3)
        (6 * 2**20, 1, 4 * 2**20, 3 * 2**20, 2048),
        (2**20, 4, 2**18, 2 * 2**20, 2048),
    ],
)
def test_derived_sizes(llc, workers, l2, tile, block):
    sizes = hardware.CacheSizes(32 * 2**10, l2, llc, "test")
    assert hardware._tile_bytes(sizes, workers) == tile
    assert hardware._block_rows(tile, 4) == block
    assert block % 512 == 0


@pytest.mark.parametrize("n_rows", [1, 300, 1000, 2500, 4096, 25000])
def test_search_block_holds_the_workers_rows_in_one_tile(n_rows):
    block = hardware.search_block_rows(n_rows)
    assert 512 <= block <= hardware.database_block_rows() and block % 256 == 0
    rows = min(n_rows, 4096)
    if block > 512:  # not held at the minimum: one tile holds all of the rows
        assert rows * block * 4 <= hardware.score_tile_bytes()
    if block < hardware.database_block_rows():  # not capped: the next multiple would not fit
        assert rows * (block + 256) * 4 > hardware.score_tile_bytes()


def test_machine_answers_are_sane():
    sizes = hardware.cache_sizes()
    assert 0 < sizes.l1d <= sizes.l2 <= max(sizes.llc, sizes.l2)
    assert 2 * 2**20 <= hardware.score_tile_bytes() <= 16 * 2**20
    assert hardware.database_block_rows() % 512 == 0
    assert hardware.selection_workers() >= 1


@pytest.mark.parametrize("k", [1, 10, 128])
def test_select_topk_wide_rows_use_the_lane_bound_and_stay_exact(rng, k):
    s = rng.integers(-30, 31, size=(7, 3000)).astype(np.float32)  # ties at the k-th value
    s[2] = 0  # a row of equal scores
    s[3, 100:] = -np.inf  # a row with fewer finite entries than some k
    v, i = select_topk(s, k)
    for r in range(7):
        order = np.lexsort((np.arange(3000), -s[r].astype(np.float64)))[:k]
        np.testing.assert_array_equal(v[r], s[r, order])
        np.testing.assert_array_equal(i[r], np.where(np.isneginf(s[r, order]), -1, order))


def test_describe_machine_records_cpu_caches_and_load():
    from dehub.engine.hardware import cache_sizes, cpu_model, describe_machine

    info = describe_machine()
    assert info["cpu_model"] == cpu_model() and info["cpu_model"]
    assert info["l2_bytes"] == cache_sizes().l2 > 0 and info["llc_bytes"] >= info["l2_bytes"]
    assert len(info["load_avg"]) == 3 and info["cpus"] >= 1
    assert set(info["bf16_flags"]) <= {"amx_bf16", "avx512_bf16"}
    import json

    json.dumps(info)


def test_cpu_model_reads_the_kernels_model_name(tmp_path):
    from dehub.engine.hardware import cpu_model

    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t: fpu\n")
    assert cpu_model(str(f)) == "Test CPU 9000"


@pytest.mark.parametrize(
    ("nq", "nd", "kind"),
    [(600, 3000, "queries"), (40, 3 * 2048 + 300, "database"), (100, 1000, "queries")],
)
def test_workers_split_queries_or_database_bit_for_bit(rng, monkeypatch, nq, nd, kind):
    """Two or three workers (query ranges, or database ranges merged) == one worker."""
    q = rng.standard_normal((nq, 32)).astype(np.float32)
    x = rng.standard_normal((nd, 32)).astype(np.float32)
    off = rng.random(nd).astype(np.float32)
    kw = {"offset": off, "database_block": 2048 if kind == "database" else 512, "query_block": 256}
    for workers in (2, 3):
        parts = exact_mod._split(nq, nd, workers, kw["database_block"])
        assert len(parts) in ((workers, 1) if nq < workers * exact_mod._MIN_SPLIT_ROWS else (workers,))
        monkeypatch.setattr(exact_mod, "selection_workers", lambda w=workers: w)
        vw, iw = exact_search(q, x, 17, **kw)
        monkeypatch.setattr(exact_mod, "selection_workers", lambda: 1)
        v1, i1 = exact_search(q, x, 17, **kw)
        np.testing.assert_array_equal(iw, i1)
        np.testing.assert_array_equal(vw, v1)
    assert exact_mod._split(nq, nd, 2, kw["database_block"])[0][0] == kind


def test_score_bits_do_not_depend_on_the_blocks(rng):
    """Every GEMM call has >= 2 rows and the last database block >= 256 columns, so a
    score's float32 bits are the same however the engine cuts the work."""
    q = rng.standard_normal((301, 64)).astype(np.float32)
    x = rng.standard_normal((5000 + 3, 64)).astype(np.float32)  # 3 = a tiny remainder block
    ref_v, ref_i = exact_search(q, x, 12, query_block=301, database_block=5003)
    for qb, db in [(300, 1000), (150, 512), (7, 4096), (64, 2500)]:
        v, i = exact_search(q, x, 12, query_block=qb, database_block=db)
        np.testing.assert_array_equal(i, ref_i)
        np.testing.assert_array_equal(v.view(np.int32), ref_v.view(np.int32))


def test_even_blocks_and_database_blocks():
    from dehub.engine._rows import even_blocks

    sizes = [s.stop - s.start for s in even_blocks(1025, 512)]
    assert sizes == [342, 342, 341] and sum(sizes) == 1025
    assert [s.stop - s.start for s in even_blocks(5, 512)] == [5]
    assert list(even_blocks(0, 8)) == []
    blocks = exact_mod._database_blocks(slice(100, 100 + 3 * 2048 + 10), 2048)
    assert [b.stop - b.start for b in blocks] == [2048, 2048, 2058]  # tail of 10 joins
    blocks = exact_mod._database_blocks(slice(0, 40000), 2048, first=8192)
    assert blocks[0] == slice(0, 8192) and blocks[1] == slice(8192, 10240) and blocks[-1].stop == 40000


def test_single_threaded_blas_nests_and_restores():
    """In a fresh process: BLAS obeys only the thread that first set its thread count
    (dehub's owner thread), so a test earlier in this process that set it from another
    thread would leave the engine on its one-worker fallback."""
    from dehub.engine import _blas

    if not _blas.blas_controllable():
        pytest.skip("threadpoolctl finds no BLAS to control here")
    code = textwrap.dedent(
        """
        from dehub.engine import _blas
        before = _blas.blas_threads()
        with _blas.single_threaded_blas() as a:
            with _blas.single_threaded_blas() as b:
                assert a and b
                assert all(t == 1 for t in _blas.blas_threads())
            assert all(t == 1 for t in _blas.blas_threads())  # still one search inside
        assert _blas.blas_threads() == before, (_blas.blas_threads(), before)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def test_row_length_buffers_is_restored_and_per_thread():
    import threading

    from dehub.engine._rows import row_length_buffers

    before = np.getbufsize()
    seen = []
    with row_length_buffers(256):
        assert np.getbufsize() == 256
        t = threading.Thread(target=lambda: seen.append(np.getbufsize()))
        t.start()
        t.join()
    assert np.getbufsize() == before
    assert seen == [before]  # another thread keeps its own setting


def test_progress_total_matches_the_blocks_run(rng, monkeypatch):
    """The bar's total counts the blocks the workers really run (the floor's wide first
    block and a merged tail included)."""
    from contextlib import contextmanager

    seen = {}

    class Bar:
        n = 0

        def update(self, n=1):
            Bar.n += n

    @contextmanager
    def bar(total, desc, enable, unit="it"):
        seen["total"] = total
        yield Bar()

    monkeypatch.setattr(exact_mod, "progress_bar", bar)
    q = rng.standard_normal((300, 16)).astype(np.float32)
    x = rng.standard_normal((9 * 8192 + 100, 16)).astype(np.float32)  # floor + a 100-row tail
    exact_search(q, x, 20, database_block=2048, progress=True)
    assert Bar.n == seen["total"] > 0
