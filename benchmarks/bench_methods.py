"""Fit and search time of every registered method, and its validation sweep time.

Part 1 (synthetic, moderate scale): for each method, ``fit(gallery, reference)`` (bank
methods also get a ``--gallery-bank`` of the same distribution) and ``search(queries, 10)``
on clustered unit vectors, in ``--repeats`` paired rounds (NNN, then each method): medians,
and the median of the per-round ratios to NNN's fit.
Part 2 (``--sweep``, the bundled WordNet benchmark): the wall time of a full validation
sweep per method and direction, i.e. ``fit_grid`` over ``default_grid()`` plus one
``search(validation queries, 10)`` per grid point (what the evaluation harness does).

    python benchmarks/bench_methods.py                     # 5,000 x 100,000 x 384, 5,000 queries
    python benchmarks/bench_methods.py --sweep             # plus the WordNet sweeps
    python benchmarks/bench_methods.py --small --sweep     # quick smoke run
    python benchmarks/bench_methods.py --sweep-only --methods qbnorm dbnorm
    python benchmarks/bench_methods.py --methods nnn sn dbsn invgc mutual_proximity local_scaling
    python benchmarks/bench_methods.py --table --output t.json   # docs/methods.md member table

Part 4 (``--best``): on the bundled WordNet benchmark (and with ``--held-out`` a
held-out-sized synthetic set), per direction, ``best``'s validation selection (default
cost budget, natural gallery banks) next to NNN's own sweep in paired rounds whose
order alternates (median of per-round ratios), and with ``--full`` the member-by-member
selection without a budget (time, and whether it picks the same).

    python benchmarks/bench_methods.py --best --held-out --rounds 3 --output best.json
    python benchmarks/bench_methods.py --best --held-out-only --full --full-skip dbsn

``--sparsity``: the share of Sinkhorn kernel entries a sparse iteration within 1e-8 of
the offsets would have to keep (why SN/DBSN fit recomputes the kernel per iteration).

Part 3 (``--table``): the paper's protocol (``dehub.evaluation.run_evaluation``) on the
bundled benchmark for every member plus ``best``, and DSL in its transductive setting
(temperature chosen with the validation queries as its query set, test fit with the test
queries): R@1/5/10 with bootstrap CIs, hubness (max N_10, N_10 skewness), fit and search
seconds of the chosen setting; JSON to ``--output`` and a markdown table on stdout.

All numbers are printed as measured on this machine (threads: numpy's BLAS default).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from dehub.methods import METHODS


def clustered_unit(n: int, d: int, rng: np.random.Generator, centers: np.ndarray) -> np.ndarray:
    """Unit vectors around a few shared centers (real embeddings are far from isotropic)."""
    x = centers[rng.integers(0, centers.shape[0], size=n)] + 0.35 * rng.standard_normal(
        (n, d), dtype=np.float32
    )
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def best_time(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_fit(args) -> None:
    """Every method's fit and search next to NNN's, in paired rounds (median of per-round ratios).

    Each round fits NNN and then every other method once, alternating, so a busy
    machine slows them alike; the table gives each method's median seconds and the
    median over rounds of its fit time / that round's NNN fit time. Methods that take a
    gallery bank (asked through their tags) get one of ``--gallery-bank`` rows from the
    same distribution.
    """
    from dehub.methods import get_tags

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((64, args.dim), dtype=np.float32) / np.sqrt(args.dim) * 3
    gallery = clustered_unit(args.gallery, args.dim, rng, centers)
    reference = clustered_unit(args.reference, args.dim, rng, centers)
    queries = clustered_unit(args.queries, args.dim, rng, centers)
    bank = clustered_unit(args.gallery_bank, args.dim, rng, centers) if args.gallery_bank else None
    print(
        f"## fit / search: gallery {args.gallery:,} x reference {args.reference:,} x d={args.dim}, "
        f"{args.queries:,} queries, top-10, {args.repeats} paired rounds (NNN, then each method)"
    )
    print(f"memory_budget {args.memory_budget >> 20} MiB; gallery bank {args.gallery_bank:,} rows")
    names = [m for m in args.methods if m != "nnn"]
    kw = {"memory_budget": args.memory_budget, "normalize": "none"}
    fits: dict[str, list[float]] = {m: [] for m in ["nnn", *names]}
    searches: dict[str, list[float]] = {m: [] for m in ["nnn", *names]}
    ratios: dict[str, list[float]] = {m: [] for m in names}
    models = {}
    for r in range(args.repeats):
        for name in ["nnn", *names]:
            model = METHODS[name]()
            extra = {"gallery_bank": bank} if bank is not None and get_tags(model).gallery_bank else {}
            t = time.perf_counter()
            model.fit(gallery, reference, **extra, **kw)
            fits[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            model.search(queries, 10, **kw)
            searches[name].append(time.perf_counter() - t)
            models[name] = (model, bool(extra))
            if name != "nnn":
                ratios[name].append(fits[name][-1] / fits["nnn"][-1])
            print(
                f"  round {r}: {name} fit {fits[name][-1]:.2f} s (load {os.getloadavg()[0]:.1f})", flush=True
            )
    print(
        f"{'method':<16} {'params':<44} {'fit s':>8} {'search s':>9} {'fit / nnn':>9}  (medians; per-round ratios)"
    )
    for name in ["nnn", *names]:
        model, banked = models[name]
        params = ", ".join(
            f"{k}={v}" for k, v in model.get_params().items() if k not in ("engine", "engine_params")
        )
        ratio = (
            f"{np.median(ratios[name]):9.2f}  {[round(x, 2) for x in ratios[name]]}"
            if name != "nnn"
            else f"{'1':>9}"
        )
        extra = " (with the gallery bank)" if banked else ""
        if getattr(model, "marginal_error_", None) is not None:
            extra += (
                f"  (Sinkhorn marginal error after {model.n_iter_} iterations: {model.marginal_error_:.3g})"
            )
        print(
            f"{name:<16} {params:<44} {np.median(fits[name]):>8.3f} {np.median(searches[name]):>9.3f} {ratio}{extra}",
            flush=True,
        )


def bench_sweep(args) -> None:
    from dehub.datasets import load_wordnet_benchmark

    bench = load_wordnet_benchmark()
    print(f"\n## validation sweep on {bench.name}: fit_grid(default_grid) + one search per grid point")
    print(f"{'method':<12} {'direction':<22} {'points':>6} {'sweep s':>8}")
    for direction in ("a2b", "b2a"):
        val = bench.validation
        queries, gallery = (val.a, val.b) if direction == "a2b" else (val.b, val.a)
        queries = np.asarray(queries, dtype=np.float32)
        gallery = np.asarray(gallery, dtype=np.float32)
        reference = np.asarray(bench.reference_for(direction), dtype=np.float32)
        if args.small:
            reference = reference[:4000]
        for name in args.methods:
            t = time.perf_counter()
            n = 0
            for _params, model in METHODS[name]().fit_grid(gallery, reference, normalize="none"):
                model.search(queries, 10, normalize="none")
                n += 1
            dt = time.perf_counter() - t
            label = f"{bench.direction_name(direction)} ({queries.shape[0]}x{gallery.shape[0]}, ref {reference.shape[0]})"
            print(f"{name:<12} {label:<22} {n:>6} {dt:>8.2f}")


def machine() -> dict:
    """CPU model, caches, bf16 flags, load and versions (dehub.engine.hardware.describe_machine)."""
    from dehub.engine.hardware import describe_machine

    return describe_machine()


def bench_table(args) -> None:
    from dehub.datasets import load_wordnet_benchmark
    from dehub.evaluation import run_evaluation

    bench = load_wordnet_benchmark()
    # DSL is evaluated as published, transductively (the protocol fits it on the queries
    # being answered and marks it); it is not a member of "best".
    members = list(args.methods)
    before = machine()
    t0 = time.perf_counter()
    res = run_evaluation(
        bench, methods=["plain", *[m for m in members if m != "plain"], "best"], progress=False
    )
    rows = []
    for direction, d in res.data["directions"].items():
        per = d["bootstrap"]["per_method"]
        for m, md in d["methods"].items():
            tm = res.data["timings"][direction][m]
            rows.append(
                {
                    "direction": d["name"],
                    "method": f"{m} (transductive)" if md.get("transductive") else m,
                    "params": md["chosen_params"],
                    **{f"R@{k}": per[m][f"success@{k}"] for k in (1, 5, 10)},  # R@K = success@K
                    "max_N10": md["hubness"]["10"]["max"],
                    "skew_N10": md["hubness"]["10"].get("skewness"),
                    "fit_s": tm["fit"],
                    "search_s": tm["search"],
                    "sweep_s": tm["sweep"],
                    "best": md.get("best", {}).get("reason"),
                    "bank": md.get("bank"),
                    "transductive": bool(md.get("transductive")),
                }
            )
    after = machine()
    doc = {
        "machine_before": before,
        "machine_after": after,
        "seconds": time.perf_counter() - t0,
        "rows": rows,
    }
    doc["best_selection"] = {d["name"]: d["methods"]["best"]["best"] for d in res.data["directions"].values()}
    if args.output:
        with open(args.output, "w") as f:
            json.dump(doc, f, indent=1, default=str)
    print(
        "| direction | method | R@1 | R@5 | R@10 | max N10 | skew N10 | fit s | search s | setting | bank |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [
            f"{100 * r[f'R@{k}']['value']:.2f} [{100 * r[f'R@{k}']['ci_low']:.2f}, {100 * r[f'R@{k}']['ci_high']:.2f}]"
            for k in (1, 5, 10)
        ]
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        bank = r["bank"] or ""
        bank = "-" if bank == "takes no gallery bank" else bank.replace("gallery bank: ", "")
        skew = r["skew_N10"]
        print(
            f"| {r['direction']} | {r['method']} | {' | '.join(cells)} | {r['max_N10']} | "
            f"{'-' if skew is None else f'{skew:.2f}'} | {r['fit_s']:.2f} | {r['search_s']:.2f} | {params} | {bank} |"
        )
    for name, sel in doc["best_selection"].items():
        print(f"\nbest, {name}: {sel['member']} {sel['params']}: {sel['reason']} ({sel['seconds']:.1f} s)")
        for m, why in sel["skipped"].items():
            print(f"  skipped {m}: {why}")
    print(f"\nmachine before: {before}\nmachine after: {after}\ntotal {doc['seconds']:.0f} s")


def held_out_benchmark(seed: int = 7, dim: int = 384):
    """A held-out-sized synthetic paired set (5,000 test / 2,000 validation / 20,000
    reference queries, two queries per item), not used to tune anything in ``best``.

    Items lie around 64 cluster centres (unit centre + noise of norm 1) and lean by a
    random amount (up to 0.5) towards one shared direction (the hubs); each query is its
    item's base vector plus noise of norm 6 and a shared modality shift of 0.6. Plain R@1
    on validation is about 42% (query->item) and 46% (item->query); NNN (k=16, alpha=0.75)
    gives +0 and +10 points there.
    """
    from dehub.datasets import PairedBenchmark, PairedSplit

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((64, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    hub = rng.standard_normal(dim).astype(np.float32)
    hub /= np.linalg.norm(hub)
    shift = rng.standard_normal(dim).astype(np.float32)
    shift /= np.linalg.norm(shift)

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def split(n_items: int) -> PairedSplit:
        noise = rng.standard_normal((n_items, dim)).astype(np.float32) / np.sqrt(dim)
        base = unit(centers[rng.integers(0, 64, n_items)] + noise)
        items = unit(base + rng.uniform(0.0, 1.0, (n_items, 1)).astype(np.float32) * 0.5 * hub)
        q_noise = 6.0 * rng.standard_normal((2 * n_items, dim)).astype(np.float32) / np.sqrt(dim)
        queries = unit(np.repeat(base, 2, axis=0) + q_noise + 0.6 * shift)
        pairs = np.stack([np.arange(2 * n_items), np.repeat(np.arange(n_items), 2)], axis=1)
        return PairedSplit(a=queries, b=items, pairs=pairs)

    return PairedBenchmark(
        name="held-out synthetic (clustered, planted hubs)",
        test=split(2500),
        validation=split(1000),
        reference=split(10000),
        a_name="query",
        b_name="item",
    )


def bench_best(args) -> None:
    """``best`` (default budget) next to NNN's sweep in paired rounds (the order alternates),
    per direction, on the bundled WordNet benchmark and (``--held-out``) a held-out-sized
    synthetic set; with ``--full`` also the member-by-member selection without a budget."""
    from dehub.datasets import load_wordnet_benchmark
    from dehub.evaluation.best import default_members, select_best_member
    from dehub.evaluation.protocol import gallery_bank_for
    from dehub.evaluation.sweep import sweep

    sets = [] if args.held_out_only else [load_wordnet_benchmark()]
    if args.held_out or args.held_out_only:
        sets.append(held_out_benchmark())
    out = {"machine_before": machine(), "sets": {}}
    print(f"# best vs NNN's sweep; machine: {out['machine_before']}", flush=True)
    for bench in sets:
        per_set = out["sets"].setdefault(bench.name, {})
        for direction in ("a2b", "b2a"):
            task, ref = bench.validation.task(direction), bench.reference_for(direction)
            bank, _ = gallery_bank_for(bench, direction, "natural")
            fit_inputs = {m: {"gallery_bank": bank} for m in ("dbnorm", "dbnorm_dis", "dn", "invgc", "dbsn")}
            name = f"{bench.name} {bench.direction_name(direction)}"
            shapes = f"{task.queries.shape[0]} queries x {task.gallery.shape[0]} gallery, ref {ref.shape[0]}, bank {bank.shape[0]}"
            rounds = []
            for r in range(args.rounds):
                order = ("nnn", "best") if r % 2 == 0 else ("best", "nnn")
                took = {}
                for what in order:
                    t = time.perf_counter()
                    if what == "nnn":
                        sweep("nnn", task, ref, normalize="none")
                    else:
                        sel = select_best_member(task, ref, fit_inputs=fit_inputs, n_bootstrap=1000)
                    took[what] = time.perf_counter() - t
                rounds.append(
                    {"nnn_sweep_s": took["nnn"], "best_s": took["best"], "ratio": took["best"] / took["nnn"]}
                )
                print(
                    f"{name} round {r} ({shapes}): NNN sweep {took['nnn']:.2f} s, best {took['best']:.2f} s "
                    f"(x{took['best'] / took['nnn']:.2f}); chose {sel.member} {sel.params}; per member "
                    f"{ {m: round(v, 2) for m, v in sel.timings.items()} }; skipped {list(sel.skipped)}",
                    flush=True,
                )
            entry = {
                "shapes": shapes,
                "rounds": rounds,
                "median_ratio": float(np.median([x["ratio"] for x in rounds])),
                "choice": [sel.member, sel.params],
                "reason": sel.reason,
                "skipped": sel.skipped,
                "member_seconds": sel.timings,
                "member_cost_estimates": sel.estimates,
                "shared_passes": sel.shared_passes,
                "load_after": machine().get("load_avg"),
            }
            print(f"{name}: median best / NNN sweep = x{entry['median_ratio']:.2f}", flush=True)
            if args.full:
                t = time.perf_counter()
                skip = list(args.full_skip)
                members = [m for m in default_members() if m not in skip]
                full = select_best_member(
                    task, ref, members=members, fit_inputs=fit_inputs, n_bootstrap=1000, budget=None
                )
                same = (full.member, full.params) == (sel.member, sel.params)
                entry["full"] = {
                    "seconds": time.perf_counter() - t,
                    "members_left_out": skip,
                    "choice": [full.member, full.params],
                    "member_seconds": full.timings,
                    "reason": full.reason,
                    "same_choice": same,
                }
                print(
                    f"{name} full sweep (no budget, left out {skip}): {entry['full']['seconds']:.1f} s, chose "
                    f"{full.member} {full.params}; same choice: {same}; per member "
                    f"{ {m: round(v, 1) for m, v in full.timings.items()} }",
                    flush=True,
                )
            per_set[bench.direction_name(direction)] = entry
    out["machine_after"] = machine()
    print(f"machine after: {out['machine_after']}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(out, f, indent=1, default=str)


def bench_pot(args) -> None:
    """Max |dehub - POT| of SN offsets on real MiniLM (600 lemmas x 3,000 definitions), 10 iterations."""
    import warnings

    import ot

    from dehub.datasets.wordnet import load_wordnet_benchmark
    from dehub.methods.sinkhorn import sinkhorn_offsets

    bm = load_wordnet_benchmark(verify=False)
    g = np.ascontiguousarray(bm.test.b[:600])
    r = np.ascontiguousarray(bm.reference.a[:3000])
    S = g.astype(np.float64) @ r.T.astype(np.float64)
    n, m = S.shape
    a = np.full(n, 1 / n)
    b = np.full(m, 1 / m)
    print(
        "| tau | vs POT sinkhorn_log, float32 inputs | float64 inputs | vs POT sinkhorn_knopp (float32 inputs) |"
    )
    for tau in (0.001, 0.002, 0.005, 0.01, 0.05):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            _, ll = ot.sinkhorn(a, b, 1 - S, reg=tau, numItermax=10, log=True, method="sinkhorn_log")
            _, lk = ot.sinkhorn(a, b, 1 - S, reg=tau, numItermax=10, log=True)
        numerr = any("numerical" in str(x.message).lower() or "overflow" in str(x.message).lower() for x in w)
        ref = -tau * (ll["log_u"] - np.log(n))
        knopp = -tau * np.log(lk["u"])
        d32 = [
            np.abs(sinkhorn_offsets([g], r, tau, 10, memory_budget=bud).offsets[10] - ref).max()
            for bud in (2**30, 2_000_000)
        ]
        d64 = [
            np.abs(
                sinkhorn_offsets(
                    [g.astype(np.float64)], r.astype(np.float64), tau, 10, memory_budget=bud
                ).offsets[10]
                - ref
            ).max()
            for bud in (2**30, 4_000_000)
        ]
        dk = np.abs(sinkhorn_offsets([g], r, tau, 10).offsets[10] - knopp).max()
        print(
            f"| {tau} | {max(d32):.1e} | {max(d64):.1e} | {dk:.1e}{' (POT numerical-error warnings)' if numerr else ''} |",
            flush=True,
        )


def bench_sparsity(args) -> None:
    """How sparse a Sinkhorn kernel could be and stay within 1e-8 of the offsets (issue 25 item 5).

    Dense float64 Sinkhorn (10 iterations) on 1,000 gallery x 10,000 bank rows of real
    MiniLM (the bundled WordNet benchmark) and of the synthetic clustered data of the fit
    benchmark. A kernel that drops entry (i, j) changes row i's log-sum-exp by at most
    the dropped plan mass over the kept one; for every dropped entry to be certifiably
    negligible (offsets within 1e-8 over 21 half-steps) its plan value P_ij =
    exp(C_ij + f_i + g_j) must be below ``exp(T)``, ``T = log(1e-8 / tau / 21) - log(n m)
    - drift``, where ``drift`` is how far the potentials move after the kernel is chosen.
    Printed: the share of entries above that line, choosing with the final
    potentials (after iteration 10, drift 0: the best case) and with those after iteration 1.
    """
    from scipy.special import logsumexp

    from dehub.datasets.wordnet import load_wordnet_benchmark

    bm = load_wordnet_benchmark(verify=False)
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((64, 384), dtype=np.float32) / np.sqrt(384) * 3
    sets = {
        "MiniLM WordNet": (np.asarray(bm.test.b[:1000]), np.asarray(bm.reference.a[:10000])),
        "synthetic clustered": (
            clustered_unit(1000, 384, rng, centers),
            clustered_unit(10000, 384, rng, centers),
        ),
    }
    print(
        "| data | tau | f range | g range | kept share, chosen with the final (iteration-10) potentials | chosen with the iteration-1 potentials |"
    )
    print("|---|---|---|---|---|---|")
    for name, (g, r) in sets.items():
        s = g.astype(np.float64) @ r.T.astype(np.float64)
        n, m = s.shape
        la, lb = -np.log(n), -np.log(m)
        for tau in (0.005, 0.01, 0.05):
            c = (s - 1) / tau
            f = np.full(n, la)
            g_pot = lb - logsumexp(c + f[:, None], axis=0)
            hist = []
            for _ in range(10):
                f = la - logsumexp(c + g_pot[None, :], axis=1)
                g_pot = lb - logsumexp(c + f[:, None], axis=0)
                hist.append((f.copy(), g_pot.copy()))
            f1, g1 = hist[0]
            drift = max(max((hf - f1).max() for hf, _ in hist), 0) + max(
                max((hg - g1).max() for _, hg in hist), 0
            )
            line = np.log(1e-8 / tau / 21) - np.log(n * m)
            conv = float(np.mean(c + f[:, None] + g_pot[None, :] >= line))
            first = float(np.mean(c + f1[:, None] + g1[None, :] >= line - drift))
            print(
                f"| {name} | {tau} | {np.ptp(f):.1f} | {np.ptp(g_pot):.1f} | {100 * conv:.1f}% | "
                f"{100 * first:.1f}% (drift {drift:.1f}) |",
                flush=True,
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gallery", type=int, default=5000)
    p.add_argument("--reference", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=5000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--repeats", type=int, default=3, help="paired rounds of the fit / search timings")
    p.add_argument(
        "--gallery-bank",
        type=int,
        default=5000,
        help="rows of the gallery bank given to bank methods (0: none)",
    )
    p.add_argument("--methods", nargs="+", default=sorted(METHODS), choices=sorted(METHODS))
    p.add_argument(
        "--sweep", action="store_true", help="also time the validation sweeps on the WordNet benchmark"
    )
    p.add_argument("--sweep-only", action="store_true", help="only the WordNet sweeps (implies --sweep)")
    p.add_argument("--small", action="store_true", help="smoke run: 1,000 x 10,000, 1,000 queries, 1 repeat")
    p.add_argument(
        "--memory-budget", type=int, default=512 * 2**20, help="bytes of working memory (default 512 MiB)"
    )
    p.add_argument("--table", action="store_true", help="only the docs table of every member on WordNet")
    p.add_argument("--output", help="JSON output of --table / --best")
    p.add_argument(
        "--pot", action="store_true", help="only SN offsets vs POT's float64 Sinkhorn, tau 0.001-0.05"
    )
    p.add_argument("--best", action="store_true", help="only best's time next to NNN's sweep on WordNet")
    p.add_argument(
        "--sparsity", action="store_true", help="only the certified-sparse Sinkhorn kernel's share (SN fit)"
    )
    p.add_argument("--full", action="store_true", help="with --best: also the full sweep (no budget)")
    p.add_argument("--rounds", type=int, default=3, help="with --best: paired rounds")
    p.add_argument(
        "--held-out", action="store_true", help="with --best: also the held-out-sized synthetic set"
    )
    p.add_argument("--held-out-only", action="store_true", help="with --best: only the held-out-sized set")
    p.add_argument(
        "--full-skip", nargs="*", default=[], help="with --full: members left out of the full sweep (named)"
    )
    args = p.parse_args()
    if args.pot:
        bench_pot(args)
        return
    if args.best:
        bench_best(args)
        return
    if args.sparsity:
        bench_sparsity(args)
        return
    if args.table:
        bench_table(args)
        return
    if args.small:
        args.gallery, args.reference, args.queries, args.repeats = 1000, 10_000, 1000, 1
        args.gallery_bank = min(args.gallery_bank, 1000)
    print(f"# dehub method benchmark (numpy {np.__version__}); machine: {machine()}")
    if not args.sweep_only:
        bench_fit(args)
    if args.sweep or args.sweep_only:
        bench_sweep(args)


if __name__ == "__main__":
    main()
