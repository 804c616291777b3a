"""precision="bf16": the fp32 engine's results (ids and score bits), the bound, the fallback."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from dehub.engine import exact_search, lowp_bound, lowp_rescore
from dehub.engine._blas import single_threaded_blas
from dehub.engine.accel import check_precision, resolve_precision
from dehub.engine.exact import scored_by_gemv
from dehub.engine.lowp import LowpStats, bf16_search, bound_coefficients, pair_bound
from dehub.engine.topk import kernel_isa

torch = pytest.importorskip("torch")

BUDGET = 512 * 2**20


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(a.dtype)


def _same(q, x, k, offset=None, **kw):
    """bf16 == fp32: identical ids and identical score bits."""
    budget = kw.pop("memory_budget", BUDGET)
    v, i = exact_search(q, x, k, offset=offset, memory_budget=budget, **kw)  # the same blocks
    st = LowpStats()
    got = bf16_search(q, x, k, offset=offset, memory_budget=budget, stats=st, **kw)
    assert got is not None
    v2, i2 = got
    np.testing.assert_array_equal(i2, i)
    np.testing.assert_array_equal(v2.view(np.int32), v.view(np.int32))
    assert 0 < st.n_candidates <= st.n_pairs
    return st


def _data(kind: str, nq: int, nd: int, d: int, seed: int = 0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    if kind == "random":
        q = rng.standard_normal((nq, d))
        x = rng.standard_normal((nd, d))
    elif kind == "clustered":
        c = rng.standard_normal((8, d)) * 3
        q = c[rng.integers(0, 8, nq)] + rng.standard_normal((nq, d))
        x = c[rng.integers(0, 8, nd)] + rng.standard_normal((nd, d))
    else:
        raise ValueError(kind)
    return _unit(q).astype(dtype), _unit(x).astype(dtype)


@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize("with_offset", [False, True])
def test_bf16_equals_fp32(kind, with_offset):
    q, x = _data(kind, 150, 6000, 64, seed=3)
    off = np.random.default_rng(4).random(x.shape[0]).astype(np.float32) * 0.2 if with_offset else None
    _same(q, x, 16, offset=off)


def test_near_ties_duplicates_and_unit_scores():
    """Many database rows within the bf16 error of each other, exact duplicates, and
    scores of exactly +1 and -1 (the queries themselves and their negatives)."""
    rng = np.random.default_rng(7)
    d = 48
    q = _unit(rng.standard_normal((100, d)).astype(np.float32))
    base = _unit(rng.standard_normal((40, d)).astype(np.float32))
    # 40 bases x 60 copies perturbed far below the bf16 error (2^-12 relative)
    near = np.repeat(base, 60, axis=0) * (1 + rng.standard_normal((2400, d)).astype(np.float32) * 2.0**-14)
    dup = np.repeat(base[:5], 20, axis=0)
    x = np.concatenate([near, dup, q[:30], -q[30:60], q[:10]]).astype(np.float32)
    x = x[rng.permutation(x.shape[0])]
    _same(q, x, 40)
    off = np.round(rng.random(x.shape[0]) * 4) / 16  # many exactly equal offsets
    _same(q, x, 40, offset=off.astype(np.float32))


def test_float16_and_float64_inputs():
    q, x = _data("clustered", 120, 3000, 32, seed=11)
    _same(q.astype(np.float16), x.astype(np.float16), 8)
    _same(q.astype(np.float64), x.astype(np.float64), 8)
    off = np.random.default_rng(1).random(3000) * 0.1
    _same(q.astype(np.float64), x.astype(np.float64), 8, offset=off)  # float64 offset


def test_not_unit_norms_and_streamed_blocks():
    """Norms far from 1, the database streamed block by block (budget too small for the
    whole bf16 copy), several query blocks, k larger than a lane count and k > n."""
    rng = np.random.default_rng(5)
    q = (rng.standard_normal((90, 40)) * rng.uniform(0.1, 30, (90, 1))).astype(np.float32)
    x = (rng.standard_normal((2500, 40)) * rng.uniform(0.01, 5, (2500, 1))).astype(np.float32)
    _same(q, x, 24, memory_budget=2**18, query_block=32, database_block=512)
    _same(q[:70], x[:100], 130)  # k > n_database: padded -inf / -1 as fp32


def test_rescore_groups_match_engine_gemm_entries():
    """Uneven candidate counts and group sizes: the re-scored bits are the engine's."""
    q, x = _data("random", 257, 4000, 96, seed=9)
    _same(q, x, 5)
    _same(q, x, 64)
    # 513 rows and 97 = 3 x 32 + 1: the engine cuts them into near-equal tiles (no
    # one-row GEMV tile), so the 8-row re-score reproduces every score
    q, x = _data("random", 513, 9000, 64, seed=10)
    _same(q, x, 16)
    _same(q[:97], x, 16, query_block=32)
    # one query on the blocked path: the engine's calls are GEMVs, and so are the re-score's
    assert scored_by_gemv(1)
    _same(q[:1], x, 16, database_block=2048)


@pytest.mark.skipif(kernel_isa() is None, reason="the compiled kernel is not built")
@pytest.mark.parametrize("d", [7, 64, 100, 384, 512, 1000])
def test_compiled_chains_are_this_blas_gemm_entries(d):
    """The panels found for d (one, two rounded halves, 448-wide then halves) give every
    entry of an engine-sized GEMM bit for bit, zeros' signs and subnormal products included,
    and a wrong panel end does not."""
    ends = lowp_rescore.chain_panels(d)
    assert ends is not None and ends[-1] == d
    rng = np.random.default_rng(d)
    q = rng.standard_normal((70, d)).astype(np.float32)
    x = rng.standard_normal((2000, d)).astype(np.float32)
    x[:5] = 0.0
    q[:3] = np.where(np.arange(d) % 2 == 0, 1.0, -1.0)
    off = rng.standard_normal(2000).astype(np.float32)
    with single_threaded_blas():  # as the engine's workers (the threaded driver splits d=1000 differently)
        want = q @ x.T - off
    cols = rng.permutation(2000).astype(np.int64)
    got = lowp_rescore.chain_scores(q, x, np.arange(70), cols, off, np.asarray(ends, np.int64))
    np.testing.assert_array_equal(got.view(np.uint32), want[:, cols].view(np.uint32))
    # the other paths of the kernel (AVX2, plain C fmaf) where this CPU has them: the same bits
    for isa in ("avx2", "scalar"):
        try:
            other = lowp_rescore.chain_scores(
                q[:9], x, np.arange(9), cols, off, np.asarray(ends, np.int64), isa
            )
        except ValueError:
            continue  # not on this CPU
        np.testing.assert_array_equal(other.view(np.uint32), want[:9, cols].view(np.uint32))
    if d >= 64:
        wrong = np.asarray([d // 2 - 1, d] if len(ends) == 1 else [d], np.int64)
        bad = lowp_rescore.chain_scores(q, x, np.arange(70), cols, off, wrong)
        assert (bad != want[:, cols]).mean() > 0.5


@pytest.mark.parametrize("chains", [True, False], ids=["compiled-chains", "grouped-gemms"])
def test_both_rescore_paths_on_the_adversarial_sets(chains, monkeypatch):
    """The compiled chains and the grouped GEMMs (another BLAS, or no kernel) each give the
    fp32 engine's bits: near ties, duplicates, +-1 scores, clustered, two K panels (d=512)."""
    if not chains:
        monkeypatch.setattr(lowp_rescore, "chain_panels", lambda d: None)
    elif kernel_isa() is None:
        pytest.skip("the compiled kernel is not built")
    rng = np.random.default_rng(21)
    base = _unit(rng.standard_normal((30, 512)).astype(np.float32))
    q = _unit(rng.standard_normal((90, 512)).astype(np.float32))
    near = np.repeat(base, 40, axis=0) * (1 + rng.standard_normal((1200, 512)).astype(np.float32) * 2.0**-14)
    x = np.concatenate([near, q[:20], -q[20:40], np.repeat(base[:3], 10, axis=0)]).astype(np.float32)
    x = x[rng.permutation(x.shape[0])]
    st = _same(q, x, 24, offset=(np.round(rng.random(x.shape[0]) * 4) / 16).astype(np.float32))
    assert st.n_rescore_pairs == st.n_candidates if chains else st.n_rescore_pairs >= st.n_candidates
    q2, x2 = _data("clustered", 130, 5000, 1000, seed=5)
    _same(q2, x2, 16)


def test_bound_holds_on_sampled_and_worst_case_pairs():
    rng = np.random.default_rng(0)
    for d in (16, 256, 512):
        coef = bound_coefficients(d, np.float32, np.float32)
        q = rng.standard_normal((64, d)).astype(np.float32) * rng.uniform(0.01, 10, (64, 1)).astype(
            np.float32
        )
        x = rng.standard_normal((512, d)).astype(np.float32)
        # worst case for the input rounding: components just below a bf16 halfway point,
        # all of the same sign (every product loses almost 2u in the same direction)
        worst = np.full((4, d), 1 + 2.0**-8 - 2.0**-22, np.float32) * np.array(
            [[1], [3], [0.5], [7]], np.float32
        )
        q = np.concatenate([q, worst])
        x = np.concatenate([x, worst, -worst])
        off = (rng.standard_normal(x.shape[0]) * 0.5).astype(np.float32)
        t = q @ x.T - off
        tb = torch.mm(torch.from_numpy(q).bfloat16(), torch.from_numpy(x).bfloat16().T).float().numpy() - off
        err = np.abs(tb.astype(np.float64) - t.astype(np.float64))
        bound = pair_bound(
            coef, np.linalg.norm(q, axis=1)[:, None], np.linalg.norm(x, axis=1)[None, :], np.abs(off)
        )
        assert (err <= bound).all(), float((err / bound).max())
        # the worst-case pairs use a sizeable part of the bound: it is not vacuous
        assert (err[-4:, 512:516] / bound[-4:, 512:516]).max() > 0.5
        # Theorem 1': the measured residual norms in place of the worst-case input rounding
        qn, qr = lowp_bound.norm_bounds(q)
        xn, xr = lowp_bound.norm_bounds(x)
        assert (qn >= np.linalg.norm(q.astype(np.float64), axis=1)).all()
        exact_r = np.linalg.norm(
            torch.from_numpy(x).bfloat16().double().numpy() - x.astype(np.float64), axis=1
        )
        assert (xr >= exact_r).all() and (xr <= exact_r * 1.001 + 1e-30).all()
        tight = pair_bound(coef, qn[:, None], xn[None, :], np.abs(off), qr[:, None], xr[None, :])
        assert (err <= tight).all(), float((err / tight).max())
        assert (tight <= bound * 1.0001).all()  # never looser than the worst case
        assert (err[-4:, 512:516] / tight[-4:, 512:516]).max() > 0.5
        if d >= 256:  # random data: residuals far below the worst case, a tighter bound
            assert np.median(tight[:64, :512] / bound[:64, :512]) < 0.85
        # Theorem 1'': the result's rounding per entry, from the entry's own bf16 value
        rest = pair_bound(
            lowp_bound.without_result_rounding(coef),
            qn[:, None],
            xn[None, :],
            np.abs(off),
            qr[:, None],
            xr[None, :],
        )
        tb32 = tb.astype(np.float32)
        per_entry = np.stack(
            [
                lowp_bound.entry_bounds(
                    rest[:, j], tight[:, j], tb32[:, j : j + 1], np.full((q.shape[0], 1), off[j], np.float32)
                )[:, 0]
                for j in range(x.shape[0])
            ],
            axis=1,
        )
        assert (err <= per_entry).all(), float((err / per_entry).max())
        assert (per_entry <= tight).all()
        assert (err[-4:, 512:516] / per_entry[-4:, 512:516]).max() > 0.5
        if d >= 256:  # scores far below the norms' product: the result's share shrinks
            assert np.median(per_entry[:64, :512] / tight[:64, :512]) < 0.8


def test_bf16_bits_are_torch_rounding():
    rng = np.random.default_rng(5)
    x = np.concatenate(
        [
            rng.standard_normal(100000).astype(np.float32),
            (rng.standard_normal(1000) * 1e-39).astype(np.float32),  # subnormal
            np.array(
                [0.0, -0.0, 1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 3.3e38, -3.4e38, 2**-149], np.float32
            ),
            rng.integers(0, 2**32, 10000, dtype=np.uint64).astype(np.uint32).view(np.float32),
        ]
    )
    x = x[np.isfinite(x)]
    want = torch.from_numpy(x).bfloat16().view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(lowp_bound.bf16_bits(x), want)
    # the compiled pass: the same bits, and norm bounds at least the exact norms
    x2 = x[: (x.size // 64) * 64].reshape(-1, 64)
    bits = np.empty(x2.shape, np.uint16)
    n1, r1 = lowp_bound.norm_bounds(x2, bits)
    np.testing.assert_array_equal(bits, want[: x2.size].reshape(x2.shape))
    exact_n = np.sqrt((x2.astype(np.float64) ** 2).sum(1))
    b64 = torch.from_numpy(x2).bfloat16().double().numpy()
    exact_r = np.sqrt(((b64 - x2.astype(np.float64)) ** 2).sum(1))
    assert (n1 >= exact_n).all() and (r1 >= exact_r).all()
    # (numpy sums squares in float32: flushed ones add up to sqrt(d 2^-126), huge ones overflow)
    big = (exact_n > 1e-15) & np.isfinite(n1)
    assert big.mean() > 0.8
    assert np.allclose(n1[big], exact_n[big], rtol=1e-5) and np.allclose(r1[big], exact_r[big], rtol=1e-5)


def test_backend_accumulates_in_fp32():
    """torch's bf16 GEMM = bf16(exact dot of the bf16 inputs) up to one bf16 ulp, and
    exactly in almost all entries: fp32 accumulation, one final rounding (a bf16
    accumulator would be off by many ulps)."""
    rng = np.random.default_rng(2)
    a = torch.from_numpy(rng.standard_normal((64, 512)).astype(np.float32)).bfloat16()
    b = torch.from_numpy(rng.standard_normal((256, 512)).astype(np.float32)).bfloat16()
    got = torch.mm(a, b.T).float().numpy().astype(np.float64)
    exact = a.double().numpy() @ b.double().numpy().T
    rounded = torch.from_numpy(exact).bfloat16().double().numpy()
    ulp = 2.0 ** (np.floor(np.log2(np.abs(exact))) - 7)
    assert (np.abs(got - rounded) <= ulp * 1.0001).all()
    assert (got == rounded).mean() > 0.97


def test_precision_parameter_and_hook():
    q, x = _data("random", 80, 3000, 32, seed=2)
    v, i = exact_search(q, x, 10)
    v2, i2 = exact_search(q, x, 10, precision="bf16")
    np.testing.assert_array_equal(i2, i)
    np.testing.assert_array_equal(v2, v)
    v3, i3 = exact_search(q[:3], x, 10, precision="bf16")  # small batch: the dense fp32 path
    np.testing.assert_array_equal(i3, exact_search(q[:3], x, 10)[1])
    with pytest.raises(ValueError, match="precision must be one of"):
        exact_search(q, x, 10, precision="bf8")
    with pytest.raises(ValueError, match="precision must be one of"):
        check_precision(16)


def test_auto_follows_the_cpu_flags(monkeypatch):
    from dehub.engine import accel

    monkeypatch.setattr(accel, "cpu_bf16_flags", lambda path="/proc/cpuinfo": ())
    assert resolve_precision("auto") == "fp32"  # no native bf16: fp32, nothing measured
    monkeypatch.setattr(accel, "cpu_bf16_flags", lambda path="/proc/cpuinfo": ("amx_bf16",))
    assert resolve_precision("auto") == "auto"  # a measurement decides
    assert resolve_precision("auto", device="cuda:0") == "bf16"
    assert resolve_precision("fp32") == "fp32"


@pytest.fixture
def tuning_dir(tmp_path, monkeypatch):
    """A fresh tuning cache, and "auto" eligible (torch and native bf16) on any CPU."""
    from dehub.engine import accel, lowp

    monkeypatch.setenv("DEHUB_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("DEHUB_TUNING", raising=False)
    monkeypatch.setattr(accel, "cpu_bf16_flags", lambda path="/proc/cpuinfo": ("amx_bf16",))
    monkeypatch.setattr(lowp, "_AUTO_MIN_PAIRS", 0)  # small test data is measured too
    monkeypatch.setattr(lowp, "_AUTO_QUERIES", 64)
    monkeypatch.setattr(lowp, "_AUTO_DATABASE", 1024)
    return tmp_path


def _count_bf16(monkeypatch):
    from dehub.engine import lowp

    calls = []
    real = lowp.bf16_search
    monkeypatch.setattr(lowp, "bf16_search", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    return calls


def test_auto_is_the_cached_measurement(tuning_dir, monkeypatch):
    """Given the cached measurement, "auto" is deterministic: it never measures again and
    runs what the cache says; either way the results are the fp32 engine's."""
    from dehub.engine import lowp, tuning

    q, x = _data("clustered", 120, 3000, 32, seed=41)
    want = exact_search(q, x, 10)
    shape = tuning.shape_class(
        "precision", d=32, dtype=np.float32, k=10, n_queries=120, n_database=3000, offset=False, device="cpu"
    )

    def no_measure(*a, **kw):
        raise AssertionError("measured although the cache holds the choice")

    monkeypatch.setattr(lowp, "measure_precision", no_measure)
    for choice, bf16_runs in (("bf16", 1), ("fp32", 0)):
        tuning.record_choice(shape, choice, {"bf16_over_fp32": 0.5 if choice == "bf16" else 1.5})
        calls = _count_bf16(monkeypatch)
        for _ in range(2):
            got = exact_search(q, x, 10, precision="auto")
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[0].view(np.int32), want[0].view(np.int32))
        assert len(calls) == 2 * bf16_runs
    report = tuning.tuning_report()
    assert report["choices"][shape]["choice"] == "fp32"
    assert report["cache_file"] == str(tuning_dir / "tuning.json")
    assert tuning.reset_tuning() == 1 and tuning.tuning_report()["choices"] == {}


def test_auto_measures_once_and_records(tuning_dir, monkeypatch):
    from dehub.engine import lowp, tuning

    q, x = _data("random", 100, 4000, 32, seed=42)
    off = np.random.default_rng(1).random(4000).astype(np.float32) * 0.1
    want = exact_search(q, x, 8, offset=off)
    runs = []
    real = lowp.measure_precision
    monkeypatch.setattr(lowp, "measure_precision", lambda *a, **kw: runs.append(1) or real(*a, **kw))
    for _ in range(2):
        got = exact_search(q, x, 8, offset=off, precision="auto")
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0].view(np.int32), want[0].view(np.int32))
    assert runs == [1]  # measured once, then read back
    (entry,) = tuning.tuning_report()["choices"].values()
    assert entry["choice"] in ("fp32", "bf16")
    assert len(entry["fp32_s"]) == len(entry["bf16_s"]) == 3 and entry["sample"][:2] == [64, 1024]
    assert (entry["choice"] == "bf16") == (entry["bf16_over_fp32"] <= 0.9)
    # switched off: measures every time and keeps nothing
    monkeypatch.setenv("DEHUB_TUNING", "off")
    assert tuning.cached_choice(next(iter(tuning.tuning_report()["choices"]), "x")) is None
    exact_search(q, x, 8, offset=off, precision="auto")
    assert runs == [1, 1]


def test_auto_without_native_bf16_or_torch_is_fp32(tuning_dir, monkeypatch):
    from dehub.engine import accel, lowp

    monkeypatch.setattr(lowp, "measure_precision", lambda *a, **kw: pytest.fail("measured"))
    calls = _count_bf16(monkeypatch)
    q, x = _data("random", 100, 3000, 16, seed=43)
    want = exact_search(q, x, 5)
    monkeypatch.setattr(accel, "cpu_bf16_flags", lambda path="/proc/cpuinfo": ())
    np.testing.assert_array_equal(exact_search(q, x, 5, precision="auto")[1], want[1])
    monkeypatch.setattr(accel, "cpu_bf16_flags", lambda path="/proc/cpuinfo": ("amx_bf16",))
    monkeypatch.setitem(sys.modules, "torch", None)
    np.testing.assert_array_equal(exact_search(q, x, 5, precision="auto")[1], want[1])
    assert calls == [] and not (tuning_dir / "tuning.json").exists()


def test_fallback_without_torch(monkeypatch, capsys):
    q, x = _data("random", 80, 2000, 16, seed=8)
    want = exact_search(q, x, 5)
    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" now raises ImportError
    got = exact_search(q, x, 5, precision="bf16")
    np.testing.assert_array_equal(got[1], want[1])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs torch" in err and "fp32" in err
    assert resolve_precision("auto") == "fp32"
    assert bf16_search(q, x, 5, memory_budget=BUDGET) is None


def test_nnn_bias_and_corrected_search_in_bf16():
    import dehub

    g, r = _data("clustered", 900, 2000, 32, seed=21)
    qs = _data("random", 100, 10, 32, seed=22)[0]
    a = dehub.NNN(k=32, alpha=0.75).fit(g, r)
    b = dehub.NNN(k=32, alpha=0.75, precision="bf16").fit(g, r)
    np.testing.assert_array_equal(b.topk_ids_, a.topk_ids_)
    np.testing.assert_array_equal(b.topk_scores_.view(np.int32), a.topk_scores_.view(np.int32))
    np.testing.assert_array_equal(b.bias_, a.bias_)
    va, ia = a.search(qs, k=20, normalize="none")
    vb, ib = b.search(qs, k=20, normalize="none")
    np.testing.assert_array_equal(ib, ia)
    np.testing.assert_array_equal(vb.view(np.int32), va.view(np.int32))
    assert b.get_params()["precision"] == "bf16"
    with pytest.raises(ValueError, match="precision"):
        dehub.NNN(precision="fp8").fit(g, r)


@pytest.mark.parametrize("method", ["nnn", "robust_nnn"])
def test_sweep_in_bf16_equals_fp32(method, monkeypatch):
    """The validation sweep with precision="bf16": every setting's fit runs through the
    bf16 pass, and the table equals the fp32 sweep's (the shared validation scores are one
    fp32 GEMM in both)."""
    pytest.importorskip("torch")
    from dehub import Relevance
    from dehub.datasets import RetrievalTask
    from dehub.evaluation import sweep
    from dehub.methods import get_method

    g, r = _data("clustered", 700, 3000, 32, seed=23)
    q = _unit(g + 0.4 * np.random.default_rng(24).standard_normal(g.shape).astype(np.float32))
    task = RetrievalTask("val", q, g, Relevance.from_pairs(np.arange(700), np.arange(700), 700, 700))
    grid = {"k": [4, 16, 64], "alpha": [0.25, 0.75, 1.0]}
    a = sweep(get_method(method), task, r, grid=grid, normalize="none")
    import dehub.engine.lowp as lowp

    calls = []
    real = lowp.bf16_search
    monkeypatch.setattr(lowp, "bf16_search", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    b = sweep(get_method(method, precision="bf16"), task, r, grid=grid, normalize="none")
    assert calls  # the fits went through the bf16 pass
    assert len(a.table) == 9
    assert b.table == a.table
    assert b.best_params == a.best_params and b.best_metrics == a.best_metrics


def test_device_path_on_cpu_tensors_and_device_errors():
    """The device code path (torch tensors on ``device``, database streamed in blocks
    under the budget) run on CPU tensors; a CUDA device that is not there is an error."""
    q, x = _data("clustered", 100, 3000, 32, seed=31)
    blocks = {"memory_budget": 2**18, "query_block": 32, "database_block": 512}  # bf16 copy streamed
    want = exact_search(q, x, 12, **blocks)
    got = exact_search(q, x, 12, precision="bf16", device="cpu", **blocks)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0].view(np.int32), want[0].view(np.int32))
    # the GPU's selection (torch ops: lane maxima, threshold, nonzero) on CPU tensors
    default = exact_search(q, x, 12)
    for kw in ({}, blocks):
        st = LowpStats()
        got = bf16_search(q, x, 12, stats=st, compiled=False, **{"memory_budget": BUDGET, **kw})
        assert got is not None and st.n_candidates > 0
        np.testing.assert_array_equal(got[1], default[1])
        np.testing.assert_array_equal(got[0].view(np.int32), default[0].view(np.int32))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            exact_search(q, x, 12, precision="bf16", device="cuda")
    with pytest.raises(ValueError, match="bf16 pass"):
        exact_search(q, x, 12, precision="fp32", device="cuda")


def test_real_embeddings_wordnet_minilm():
    """The bundled real MiniLM embeddings (WordNet): NNN bias and search, bf16 == fp32."""
    import dehub
    from dehub.datasets.wordnet import load_wordnet_benchmark

    bench = load_wordnet_benchmark(verify=False)
    ref = np.ascontiguousarray(bench.reference_for("a2b")[:6000])
    gal = np.ascontiguousarray(bench.test.b[:1500])
    qs = np.ascontiguousarray(bench.test.a[:300])
    st = _same(gal, ref, 64)
    assert st.candidate_fraction < 0.2
    a = dehub.NNN(k=64).fit(gal, ref)
    b = dehub.NNN(k=64, precision="bf16").fit(gal, ref)
    np.testing.assert_array_equal(b.bias_, a.bias_)
    va, ia = a.search(qs, k=10, normalize="none")
    vb, ib = b.search(qs, k=10, normalize="none")
    np.testing.assert_array_equal(ib, ia)
    np.testing.assert_array_equal(vb, va)


def test_unprunable_scores_fall_back_to_fp32_within_the_budget():
    """Every score within the bound of every other (one row repeated): the kept set would
    be every pair, so past a third of the budget the fp32 engine answers instead."""
    rng = np.random.default_rng(3)
    x = np.repeat(_unit(rng.standard_normal((1, 32)).astype(np.float32)), 4000, axis=0)
    q = _unit(rng.standard_normal((100, 32)).astype(np.float32))
    st = LowpStats()
    assert bf16_search(q, x, 5, memory_budget=2**20, stats=st) is None and st.fell_back
    want = exact_search(q, x, 5, memory_budget=2**20)
    got = exact_search(q, x, 5, memory_budget=2**20, precision="bf16")
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])


def test_rows_the_bound_cannot_hold_go_to_fp32_alone():
    """A few rows whose top-k lie among 12,000 copies of one vector: the bf16 pass cannot
    hold their candidates within the budget; those rows alone go to the fp32 engine (the
    ``fallback``), the others keep their bf16 pass; every row equals the fp32 engine."""
    rng = np.random.default_rng(9)
    hub = _unit(rng.standard_normal((1, 48)).astype(np.float32))
    x = np.concatenate(
        [_unit(rng.standard_normal((6000, 48)).astype(np.float32)), np.repeat(hub, 12000, axis=0)]
    )
    q = _unit(rng.standard_normal((300, 48)).astype(np.float32))
    q[::50] = _unit(hub + 0.01 * rng.standard_normal((6, 48)).astype(np.float32))
    budget = 2**20
    want = exact_search(q, x, 8, memory_budget=budget)
    st = LowpStats()
    got = bf16_search(
        q,
        x,
        8,
        memory_budget=budget,
        stats=st,
        fallback=lambda r: exact_search(q[r], x, 8, memory_budget=budget),
    )
    assert got is not None and st.n_fp32_rows < q.shape[0] and st.n_candidates > 0
    if kernel_isa() is not None:  # the compiled selection's per-row limit (torch's: per block)
        assert st.n_fp32_rows > 0
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0].view(np.int32), want[0].view(np.int32))
    via_engine = exact_search(q, x, 8, memory_budget=budget, precision="bf16")
    np.testing.assert_array_equal(via_engine[1], want[1])
    np.testing.assert_array_equal(via_engine[0].view(np.int32), want[0].view(np.int32))
