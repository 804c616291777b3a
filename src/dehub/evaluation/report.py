"""Write an :class:`~dehub.evaluation.protocol.EvaluationResult` to disk.

* ``report.json``: every number (settings, seeds, versions, timings, sweep tables, test
  metrics with CIs, paired differences, hubness with k-occurrence histograms);
  non-finite floats are written as ``null``.
* ``report.md``: summary tables (test metrics with CIs, paired differences, hubness,
  chosen settings).
* ``report.html``: the same tables plus plots (k-occurrence histograms per method, the
  validation sweep heatmap of every two-parameter grid, R@K with CI error bars), as
  base64 PNGs so the page is a single file. Plots need matplotlib (``pip install
  dehub[plot]``); without it the HTML says the plots were skipped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_text
from .protocol import EvaluationResult

__all__ = ["write_report", "to_json", "markdown_summary", "html_report"]


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def to_json(result: EvaluationResult) -> str:
    """The JSON text of ``result.data`` (strict JSON: NaN/inf become null)."""
    return json.dumps(_clean(result.data), indent=2, allow_nan=False)


def _pct(x: dict) -> str:
    return f"{100 * x['value']:.2f} [{100 * x['ci_low']:.2f}, {100 * x['ci_high']:.2f}]"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


def _tables(result: EvaluationResult) -> list[tuple[str, list[str], list[list[str]]]]:
    d = result.data
    ks = d["settings"]["ks"]
    conf = int(round(100 * d["settings"]["confidence"]))
    tables = []
    head = ["direction", "method", *[f"R@{k} (%)" for k in ks], "MRR", "median rank", "chosen setting"]
    rows = []
    for dd in d["directions"].values():
        per = dd["bootstrap"]["per_method"]
        for m, md in dd["methods"].items():
            params = ", ".join(f"{k}={v}" for k, v in md["chosen_params"].items()) or "-"
            rows.append(
                [
                    dd["name"],
                    m,
                    *[_pct(per[m][f"R@{k}"]) for k in ks],
                    f"{per[m]['MRR']['value']:.4f}",
                    _fmt(md["test"].get("median_rank")),
                    params,
                ]
            )
    tables.append((f"Test results ({conf}% bootstrap CI)", head, rows))
    rows = []
    for dd in d["directions"].values():
        for name, metrics in dd["bootstrap"]["differences"].items():
            for metric, x in metrics.items():
                scale = 100 if metric.startswith("R@") else 1
                rows.append(
                    [
                        dd["name"],
                        name,
                        metric,
                        f"{scale * x['delta']:+.4g}",
                        f"[{scale * x['ci_low']:+.4g}, {scale * x['ci_high']:+.4g}]",
                        f"{x['p_boot']:.3g}",
                    ]
                )
    tables.append(
        (
            f"Paired differences ({d['settings']['n_bootstrap']} resamples, seed {d['settings']['seed']}; "
            "R@K in points)",
            ["direction", "comparison", "metric", "delta", f"{conf}% CI", "p_boot"],
            rows,
        )
    )
    rows = []
    for dd in d["directions"].values():
        for m, md in dd["methods"].items():
            for hk, h in md["hubness"].items():
                rows.append(
                    [
                        dd["name"],
                        m,
                        hk,
                        str(h["max"]),
                        _fmt(h["skewness"]),
                        _fmt(h["kurtosis"]),
                        f"{100 * h['anti_hub_share']:.1f}%",
                        _fmt(h["robin_hood"]),
                    ]
                )
    tables.append(
        (
            "Hubness of the test ranking (k-occurrence N_k; kurtosis is excess kurtosis)",
            ["direction", "method", "k", "max N_k", "skewness", "kurtosis", "never retrieved", "Robin Hood"],
            rows,
        )
    )
    rows = []
    for dd in d["directions"].values():
        rows.append(
            [
                dd["name"],
                str(dd["n_test_queries"]),
                str(dd["n_test_gallery"]),
                str(dd["n_evaluated_queries"]),
                str(dd["n_queries_without_positives"]),
                f"{dd['mean_positives_per_query']:.2f}",
                str(dd["n_reference"]),
            ]
        )
    tables.append(
        (
            f"Data (queries without positives: policy '{d['settings']['no_positive']}')",
            [
                "direction",
                "test queries",
                "test gallery",
                "evaluated",
                "without positives",
                "positives/query",
                "reference",
            ],
            rows,
        )
    )
    return tables


def markdown_summary(result: EvaluationResult) -> str:
    d = result.data
    out = [f"# dehub evaluation: {d['benchmark']['name']}", ""]
    out.append(
        f"Methods {', '.join(d['settings']['methods'])}; settings chosen by validation "
        f"{d['settings']['metric']}; dehub {d['versions']['dehub']}, numpy {d['versions']['numpy']}; "
        f"total time {d['timings']['total_seconds']:.1f} s."
    )
    for title, head, rows in _tables(result):
        out += ["", f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------- plots
def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(result: EvaluationResult) -> list[tuple[str, str]]:
    """(caption, base64 png) of every plot; raises ImportError without matplotlib."""
    from matplotlib.figure import Figure  # OO API with the Agg canvas: no pyplot global state

    def subplots(nrows=1, ncols=1, figsize=None, squeeze=True):
        fig = Figure(figsize=figsize)
        return fig, fig.subplots(nrows, ncols, squeeze=squeeze)

    d = result.data
    out = []
    hk = d["settings"]["hub_ks"][0]
    for direction, dd in d["directions"].items():
        occ = result.k_occurrence.get(direction, {})
        if occ:
            fig, ax = subplots(figsize=(6.5, 3.5))
            hi = max(int(v[hk].max()) for v in occ.values())
            bins = np.arange(0, hi + 2) - 0.5
            for m, v in occ.items():
                ax.hist(
                    v[hk], bins=bins, histtype="step", linewidth=1.5, label=f"{m} (max {int(v[hk].max())})"
                )
            ax.set_yscale("log")
            ax.set_xlabel(f"N_{hk}: queries retrieving the item in their top {hk}")
            ax.set_ylabel("gallery items")
            ax.set_title(f"k-occurrence, {dd['name']}")
            ax.legend()
            out.append((f"k-occurrence histogram N_{hk}, {dd['name']}", _png(fig)))
        for m, md in dd["methods"].items():
            grid = md["sweep"]["grid"]
            if len(grid) != 2 or not all(isinstance(x, (int, float)) for v in grid.values() for x in v):
                continue  # heatmaps need two numeric axes (not e.g. LocalScaling's variant, MP's k=None)
            p1, p2 = list(grid)
            v1 = sorted({row[p1] for row in md["sweep"]["table"]})
            v2 = sorted({row[p2] for row in md["sweep"]["table"]})
            metric = md["sweep"]["metric"]
            z = np.full((len(v1), len(v2)), np.nan)
            for row in md["sweep"]["table"]:
                z[v1.index(row[p1]), v2.index(row[p2])] = row[metric]
            fig, ax = subplots(figsize=(7, 4.5))
            im = ax.imshow(z, aspect="auto", origin="lower", cmap="viridis")
            ax.set_xticks(range(len(v2)), [f"{x:g}" for x in v2], rotation=45)
            ax.set_yticks(range(len(v1)), [f"{x:g}" for x in v1])
            ax.set_xlabel(p2)
            ax.set_ylabel(p1)
            bp = md["chosen_params"]
            ax.plot(v2.index(bp[p2]), v1.index(bp[p1]), marker="*", color="red", markersize=14)
            fig.colorbar(im, ax=ax, label=f"validation {metric}")
            ax.set_title(f"{m} validation sweep, {dd['name']} (star: chosen)")
            out.append((f"{m} validation sweep ({p1} x {p2}), {dd['name']}", _png(fig)))
    ks = d["settings"]["ks"]
    dirs = list(d["directions"].values())
    fig, axes = subplots(1, len(dirs), figsize=(5.5 * len(dirs), 3.8), squeeze=False)
    for ax, dd in zip(axes[0], dirs):
        per = dd["bootstrap"]["per_method"]
        methods = list(per)
        width = 0.8 / len(methods)
        for j, m in enumerate(methods):
            vals = np.array([per[m][f"R@{k}"]["value"] for k in ks]) * 100
            lo = np.array([per[m][f"R@{k}"]["ci_low"] for k in ks]) * 100
            hi = np.array([per[m][f"R@{k}"]["ci_high"] for k in ks]) * 100
            x = np.arange(len(ks)) + (j - (len(methods) - 1) / 2) * width
            ax.bar(x, vals, width, yerr=[vals - lo, hi - vals], capsize=3, label=m)
        ax.set_xticks(range(len(ks)), [f"R@{k}" for k in ks])
        ax.set_ylabel("recall (%)")
        ax.set_title(dd["name"])
        ax.legend()
    out.append((f"Test R@K with {int(100 * d['settings']['confidence'])}% bootstrap CIs", _png(fig)))
    return out


def html_report(result: EvaluationResult, *, plots: bool = True) -> tuple[str, bool]:
    """(HTML text, whether plots were drawn)."""
    d = result.data
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>dehub evaluation: {esc(d['benchmark']['name'])}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;}"
        "table{border-collapse:collapse;margin:1em 0;}td,th{border:1px solid #ccc;padding:3px 8px;}"
        "th{background:#eee;}img{max-width:100%;}</style>",
        "</head>",
        "<body>",
        f"<h1>dehub evaluation: {esc(d['benchmark']['name'])}</h1>",
        f"<p>dehub {esc(d['versions']['dehub'])}, numpy {esc(d['versions']['numpy'])}; "
        f"seed {d['settings']['seed']}, {d['settings']['n_bootstrap']} bootstrap resamples; "
        f"total time {d['timings']['total_seconds']:.1f} s.</p>",
    ]
    for title, head, rows in _tables(result):
        parts.append(f"<h2>{esc(title)}</h2>")
        parts.append(
            "<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"
        )
        for r in rows:
            parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
        parts.append("</tbody></table>")
    drawn = False
    if plots:
        try:
            images = _plots(result)
            drawn = True
        except ImportError:
            images = []
        parts.append("<h2>Plots</h2>")
        if not drawn:
            parts.append("<p>Plots skipped: matplotlib is not installed (pip install 'dehub[plot]').</p>")
        for caption, png in images:
            parts.append(
                f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{png}">'
                f"<figcaption>{esc(caption)}</figcaption></figure>"
            )
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts), drawn


def write_report(result: EvaluationResult, out_dir: str | Path, *, plots: bool = True) -> dict[str, Any]:
    """Write report.json, report.md and report.html into ``out_dir`` (created if needed).

    Returns ``{"json": path, "markdown": path, "html": path, "plots": bool}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page, drawn = html_report(result, plots=plots)
    result.data.setdefault("report", {})["plots"] = "drawn" if drawn else "skipped"
    paths = {"json": out / "report.json", "markdown": out / "report.md", "html": out / "report.html"}
    atomic_write_text(paths["json"], to_json(result))
    atomic_write_text(paths["markdown"], markdown_summary(result))
    atomic_write_text(paths["html"], page)
    return {**{k: str(v) for k, v in paths.items()}, "plots": drawn}
