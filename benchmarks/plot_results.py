"""Plot the benchmark results in ``benchmarks/results/*.json`` as one PNG.

    python benchmarks/plot_results.py            # writes benchmarks/results/benchmarks.png

Panels (each drawn only if its JSON exists): the exact engine's time relative to the bare
GEMM, every round of the current runs (compiled top-k, numpy selection, nnn-retrieval,
and the in-process pairs) against the targets; the approximate bias's build + search
speed-up against its R@1 change (with the per-round range); and the serving throughput of
exported d+1 indexes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# the runs of the current code (Xeon VM, 2026-12-01, fifth pass)
CORE_RUNS = (
    "core_xeon_s5",
    "core_xeon_s5_run2",
    "core_xeon_s5_blocks",
    "core_xeon_s5_final",
    "core_xeon_s5_final2",
)
PAIRED_RUNS = ("core_paired_s5", "core_paired_s5_run2", "core_paired_s5_run3", "core_paired_s5_run4")
APPROX_RUNS = ("approx_s5", "approx_s5_final")


def _load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, default=RESULTS / "benchmarks.png")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    core_runs = [d for d in (_load(n) for n in CORE_RUNS) if d is not None]
    paired_runs = [d for d in (_load(n) for n in PAIRED_RUNS) if d is not None]
    approx_runs = [d for d in (_load(n) for n in APPROX_RUNS) if d is not None]
    serving = _load("serving")
    panels = [p for p in (core_runs or paired_runs, approx_runs, serving) if p]
    if not panels:
        raise SystemExit(f"no results in {RESULTS}; run the benchmarks first (see benchmarks/README.md)")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2))
    axes = list(axes) if len(panels) > 1 else [axes]
    ax_iter = iter(axes)

    if core_runs or paired_runs:
        ax = next(ax_iter)
        kinds = [
            ("dehub-{}", "dehub, compiled top-k", "tab:blue", -0.25),
            ("dehub-{}-numpy", "dehub, numpy selection", "tab:cyan", 0.0),
            ("nnn-{}", "nnn-retrieval", "tab:orange", 0.25),
        ]
        for j, case in enumerate(("bias", "search")):
            for step, label, color, dx in kinds:
                ratios = [
                    x
                    for d in core_runs
                    for x in d.get("per_round_ratios", {}).get(step.format(case), [])
                    if step.startswith("dehub")
                ]
                if step.startswith("nnn"):  # best of each run (its rounds are not stored as ratios)
                    ratios = [
                        d["results"][step.format(case)]["seconds"] / d["results"][f"gemm-{case}"]["seconds"]
                        for d in core_runs
                        if step.format(case) in d["results"]
                    ]
                if ratios:
                    ax.scatter(
                        [j + dx] * len(ratios),
                        ratios,
                        s=14,
                        color=color,
                        alpha=0.6,
                        label=label if j == 0 else None,
                    )
            paired = [x for d in paired_runs for x in d["paired"].get(case, {}).get("ratios", [])]
            if paired:
                ax.scatter(
                    [j - 0.12] * len(paired),
                    paired,
                    s=14,
                    marker="x",
                    color="tab:purple",
                    label="dehub, compiled, in-process pairs" if j == 0 else None,
                )
            ax.hlines(1.10 if case == "bias" else 1.30, j - 0.4, j + 0.4, colors="k", linestyles="--", lw=0.8)
        ax.axhline(1.0, color="grey", lw=0.6)
        ax.set_xticks([0, 1], ["bias (5k x 118k, k=128)", "search (25k x 5k, top 10)"])
        ax.set_ylabel("time / bare GEMM time (per round)")
        ax.set_title("exact engine vs bare GEMM (Xeon VM; dashed: targets)")
        ax.legend(fontsize=7)

    if approx_runs:
        ax = next(ax_iter)
        for data in approx_runs:
            for name, e in data["engines"].items():
                delta = e["r1_delta_points"]
                x = e["speedup_build_and_search"]
                per_round = e.get("speedup_build_and_search_per_round", [])
                ax.scatter(x, delta, s=40)
                if per_round:
                    ax.hlines(delta, min(per_round), max(per_round), lw=0.8, alpha=0.5)
                short = name.replace("ivf ", "").replace("nprobe=", "np ").replace("assign_dim=", "dim ")
                ax.annotate(short or name, (x, delta), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.axvline(10, color="grey", ls="--", lw=0.8)
        ax.axhline(-0.2, color="grey", ls=":", lw=0.8)
        ax.set_xlabel("build + search speed-up over exact (best; line: per-round range)")
        ax.set_ylabel("test R@1 change vs exact NNN (points)")
        ax.set_title("approximate bias, ivf (5k x 118k x 512, k=16)")

    if serving is not None:
        ax = next(ax_iter)
        types = list(serving["types"])
        for j, t in enumerate(types):
            e = serving["types"][t]
            ax.bar(j - 0.2, e["qps_plain_d"], 0.4, color="tab:gray", label="plain d" if j == 0 else None)
            ax.bar(
                j + 0.2,
                e["qps_exported_d_plus_1"],
                0.4,
                color="tab:blue",
                label="exported d+1" if j == 0 else None,
            )
        ax.set_xticks(range(len(types)), types)
        ax.set_yscale("log")
        ax.set_ylabel("queries / s")
        ax.set_title("serving with plain FAISS (200k x 512)")
        ax.legend()

    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
