"""Plot the benchmark results in ``benchmarks/results/*.json`` as one PNG.

    python benchmarks/plot_results.py            # writes benchmarks/results/benchmarks.png

Panels (each drawn only if its JSON exists): core time relative to the bare GEMM
(dehub vs nnn-retrieval, bias and search), the approximate-bias trade-off (speed-up vs
R@1 change per engine), and the serving throughput of exported d+1 indexes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


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

    core, approx, approx1, serving = (_load(n) for n in ("core", "approx", "approx_nprobe1", "serving"))
    panels = [p for p in (core, approx or approx1, serving) if p is not None]
    if not panels:
        raise SystemExit(f"no results in {RESULTS}; run the benchmarks first (see benchmarks/README.md)")
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    axes = list(axes) if len(panels) > 1 else [axes]
    ax_iter = iter(axes)

    if core is not None:
        ax = next(ax_iter)
        s = {k: v["seconds"] for k, v in core["results"].items()}
        groups = [
            ("bias", "gemm-bias", "dehub-bias", "nnn-bias"),
            ("search", "gemm-search", "dehub-search", "nnn-search"),
        ]
        for j, (label, gemm, dehub, nnn) in enumerate(groups):
            if gemm not in s:
                continue
            ax.bar(j - 0.2, s[dehub] / s[gemm], 0.4, color="tab:blue", label="dehub" if j == 0 else None)
            if nnn in s:
                ax.bar(
                    j + 0.2,
                    s[nnn] / s[gemm],
                    0.4,
                    color="tab:orange",
                    label="nnn-retrieval" if j == 0 else None,
                )
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks([0, 1], ["bias (5k x 118k)", "search (25k x 5k)"])
        ax.set_ylabel("time / bare GEMM time")
        ax.set_title("exact engine vs bare GEMM")
        ax.legend()

    runs = [d for d in (approx, approx1) if d is not None]
    if runs:
        ax = next(ax_iter)
        for data in runs:
            for name, e in data["engines"].items():
                label = f"{name}, nprobe {data['sizes']['nprobe']}" if name.startswith("ivf") else name
                delta = e["r1_delta_points"]
                ax.scatter(e["speedup_search"], delta, s=40)
                ax.annotate(
                    label, (e["speedup_search"], delta), textcoords="offset points", xytext=(4, 4), fontsize=8
                )
        ax.axvline(50, color="grey", ls="--", lw=0.8)
        ax.axhline(-0.2, color="grey", ls=":", lw=0.8)
        ax.set_xlabel("speed-up of the bias search over exact")
        ax.set_ylabel("test R@1 change vs exact NNN (points)")
        ax.set_title("approximate bias (5k x 118k x 512)")

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
