"""Write an :class:`~dehub.evaluation.protocol.EvaluationResult` to disk.

* ``report.json``: every number (settings, seeds, versions, timings, sweep tables, test
  metrics with CIs, paired differences, hubness with k-occurrence histograms);
  non-finite floats are written as ``null``.
* ``report.md``: summary tables (test metrics with CIs, paired differences, hubness,
  chosen settings).
* ``report.html``: the same tables plus plots (N_k histograms at every hub k as small
  multiples, one panel per method over the baseline; the validation sweep heatmap of
  every two-parameter grid; success@K with CIs, one row per method; the paired
  differences with their CIs), as base64 PNGs so the page is a single file. Plots need
  matplotlib (the ``plot`` extra); without it the HTML says the plots were skipped.

Numbers: one format, two decimals; shares (success@K, recall@K, nDCG@K, mAP@R, MRR) in
%, differences in points; p-values as ``< 1/(B+1)`` when no resample crosses zero.
Notes list methods whose test rankings are identical (e.g. DBNorm with a chosen beta2
of 0 is QB-Norm) and exact duplicate gallery rows, whose N_k depends on the tie rule.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .._io import atomic_write_text
from ..engine.tuning import describe_auto
from .result import EvaluationResult

__all__ = ["write_report", "to_json", "markdown_summary", "html_report", "ExtraSections"]


class ExtraSections(Protocol):
    """Renders a part of the result that another package computed (``dehub eval --studies``)."""

    def markdown(self, data: Any) -> list[str]: ...

    def html(self, data: Any, png: Callable[[Any], str], *, plots: bool) -> list[str]: ...

    def headlines(self, data: Any) -> list[str]:
        """One line per part: its headline finding (printed on the console)."""
        ...


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


def _num(x: Any) -> str:
    """The one number format of the report: two decimals (metrics in %, deltas in points)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    return f"{float(x):.2f}"


def _pct(x: dict) -> str:
    return f"{_num(100 * x['value'])} [{_num(100 * x['ci_low'])}, {_num(100 * x['ci_high'])}]"


def _fmt(v: Any) -> str:
    return _num(v)


def p_value_text(x: dict) -> str:
    """``p_boot`` as text: ``< 1/(B+1)`` when no resample crosses zero (never ``0``)."""
    floor = x.get("p_floor")
    if x.get("n_crossing") == 0 and floor:
        b = int(round(1 / floor)) - 1
        return f"< 1/{b + 1} ({floor:.2g})"
    return f"{x['p_boot']:.2g}"


def _scale(metric: str) -> float:
    """Metrics in % (shares and means of shares); ranks as they are."""
    return 1.0 if metric in ("mean_rank", "median_rank") else 100.0


def _params_text(md: dict, fixed: dict) -> str:
    text = ", ".join(f"{k}={v}" for k, v in md["chosen_params"].items()) or "-"
    return text + (" (fixed)" if fixed else "")


def _tables(result: EvaluationResult) -> list[tuple[str, list[str], list[list[str]]]]:
    d = result.data
    ks = d["settings"]["ks"]
    conf = int(round(100 * d["settings"]["confidence"]))
    fixed = d["settings"].get("fixed_params", {})
    tables = []
    head = [
        "direction",
        "method",
        *[f"success@{k} (%)" for k in ks],
        "MRR (%)",
        "median rank",
        "setting",
    ]
    rows = []
    for dd in d["directions"].values():
        per = dd["bootstrap"]["per_method"]
        for m, md in dd["methods"].items():
            rows.append(
                [
                    dd["name"],
                    m,
                    *[_pct(per[m][f"success@{k}"]) for k in ks],
                    _pct(per[m]["MRR"]),
                    _num(md["test"].get("median_rank")),
                    _params_text(md, fixed.get(m, {})),
                ]
            )
    tables.append(
        (
            f"Test results: success@K, the share of queries with a relevant item in the top K "
            f"(the NNN paper's R@K), {conf}% bootstrap CI",
            head,
            rows,
        )
    )
    ir = [f"recall@{k}" for k in ks] + [f"nDCG@{k}" for k in ks] + ["mAP@R"]
    rows = []
    for dd in d["directions"].values():
        per = dd["bootstrap"]["per_method"]
        for m in dd["methods"]:
            rows.append([dd["name"], m, *[_pct(per[m][name]) if name in per[m] else "n/a" for name in ir]])
    tables.append(
        (
            "Test results, IR metrics: recall@K (share of a query's positives in the top K), "
            f"nDCG@K (binary gains), mAP@R (R = the query's number of positives); %, {conf}% CI",
            ["direction", "method", *[f"{n} (%)" for n in ir]],
            rows,
        )
    )
    rows = []
    for dd in d["directions"].values():
        for name, metrics in dd["bootstrap"]["differences"].items():
            for metric, x in metrics.items():
                sc = _scale(metric)
                rows.append(
                    [
                        dd["name"],
                        name,
                        metric,
                        f"{'+' if x['delta'] >= 0 else ''}{_num(sc * x['delta'])}",
                        f"[{_num(sc * x['ci_low'])}, {_num(sc * x['ci_high'])}]",
                        p_value_text(x),
                    ]
                )
    tables.append(
        (
            f"Paired differences ({d['settings']['n_bootstrap']} resamples, seed {d['settings']['seed']}; "
            "% metrics in points, ranks in positions; p_boot two-sided, '< 1/(B+1)' when no "
            "resample crosses zero)",
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
                        f"{_num(100 * h['anti_hub_share'])}%",
                        _fmt(h["robin_hood"]),
                    ]
                )
    tables.append(
        (
            "Hubness of the test ranking (k-occurrence N_k; kurtosis is excess kurtosis; "
            "N_k of exact duplicate gallery rows depends on the tie rule, see the notes)",
            ["direction", "method", "k", "max N_k", "skewness", "kurtosis", "never retrieved", "Robin Hood"],
            rows,
        )
    )
    for dd in d["directions"].values():
        methods = list(dd["methods"])
        for hk, entries in dd.get("top_hubs", {}).items():
            rows = []
            for e in entries:
                text = e["text"] if e["text"] is not None else "-"
                if e["duplicates"]:
                    text += f" (exact duplicate of row {', '.join(map(str, e['duplicates']))})"
                rows.append([str(e["row"]), text, *[str(e["N"][m]) for m in methods]])
            tables.append(
                (
                    f"Top hubs, {dd['name']}: N_{hk} of the baseline's top hubs and of each "
                    "method's own, before and after",
                    ["gallery row", "text", *[f"N_{hk} {m}" for m in methods]],
                    rows,
                )
            )
    rows = []
    for dd in d["directions"].values():
        for m, md in dd["methods"].items():
            hp = md.get("hub_precision")
            if not hp or not hp["hubs"]:
                continue
            rows.append(
                [
                    dd["name"],
                    m,
                    f"{hp['top_wins']} of {hp['n_queries']}",
                    f"{100 * hp['top_precision']:.1f}",
                    f"{100 * hp['overall_precision']:.1f}",
                    "; ".join(f"row {h['row']}: {h['right']}/{h['wins']}" for h in hp["hubs"]),
                    "yes" if hp["mostly_right"] else "no",
                ]
            )
    if rows:
        tables.append(
            (
                "Are the hubs right answers? Top-1 wins of each method's most-won items and how "
                "many are right (relevance known on test)",
                [
                    "direction",
                    "method",
                    "top hubs' wins",
                    "right (%)",
                    "all top-1 right (%)",
                    "per hub",
                    "mostly right",
                ],
                rows,
            )
        )
    rows = []
    for dd in d["directions"].values():
        dup = dd.get("gallery_duplicates", {})
        rows.append(
            [
                dd["name"],
                str(dd["n_test_queries"]),
                str(dd["n_test_gallery"]),
                str(dd["n_evaluated_queries"]),
                str(dd["n_queries_without_positives"]),
                _num(dd["mean_positives_per_query"]),
                str(dd["n_reference"]),
                f"{dup.get('n_rows', 0)} in {dup.get('n_groups', 0)} groups",
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
                "duplicate gallery rows",
            ],
            rows,
        )
    )
    return tables


def _notes(result: EvaluationResult) -> list[str]:
    out = []
    for dd in result.data["directions"].values():
        out += [f"{dd['name']}: {n}" for n in dd.get("notes", [])]
    return out


def _auto_lines(d: dict) -> list[str]:
    """What precision="auto" chose on the machine that ran the evaluation (its header)."""
    report = d.get("precision_auto")
    if not isinstance(report, dict):
        return []  # a result written before the report recorded it
    dim = d.get("benchmark", {}).get("dim")
    return describe_auto(report, d=dim if isinstance(dim, int) else None)


def markdown_summary(result: EvaluationResult, *, sections: ExtraSections | None = None) -> str:
    d = result.data
    out = [f"# dehub evaluation: {d['benchmark']['name']}", ""]
    out.append(
        f"Methods {', '.join(d['settings']['methods'])}; settings chosen by validation "
        f"{d['settings']['metric']}; dehub {d['versions']['dehub']}, numpy {d['versions']['numpy']}; "
        f"total time {d['timings']['total_seconds']:.1f} s."
    )
    if d.get("command"):
        out += ["", f"Made by: `{d['command']}`"]
    auto = _auto_lines(d)
    if auto:
        out += ["", "Engine: " + "; ".join(line.strip() for line in auto) + "."]
    notes = _notes(result)
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    for title, head, rows in _tables(result):
        out += ["", f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    if d.get("studies") and sections is not None:  # dehub eval --studies (dehub.studies.report)
        out += sections.markdown(d["studies"])
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------- plots
def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)  # constrained layout: no second "tight" pass
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _hist_bins(hi: int) -> tuple[np.ndarray, bool]:
    """Integer bins for small counts; log-spaced bins over N_k + 1 (log x axis) beyond."""
    if hi <= 40:
        return np.arange(0, hi + 2) - 0.5, False
    return np.unique(np.round(np.geomspace(1, hi + 2, 30))) - 0.5, True


def _plots(result: EvaluationResult) -> list[tuple[str, str]]:
    """(caption, base64 png) of every plot; raises ImportError without matplotlib."""
    from matplotlib.figure import Figure  # OO API with the Agg canvas: no pyplot global state

    def subplots(nrows=1, ncols=1, figsize=None, squeeze=True, **kw):
        fig = Figure(figsize=figsize, layout="constrained")
        return fig, fig.subplots(nrows, ncols, squeeze=squeeze, **kw)

    d = result.data
    out = []
    ks = d["settings"]["ks"]
    conf = int(round(100 * d["settings"]["confidence"]))
    for direction, dd in d["directions"].items():
        occ = result.k_occurrence.get(direction, {})
        methods = list(occ)
        for hk in d["settings"]["hub_ks"]:
            if not occ:
                break
            # small multiples: one panel per method, the baseline (first method) in grey
            ncols = min(5, len(methods))
            nrows = math.ceil(len(methods) / ncols)
            fig, axes = subplots(
                nrows,
                ncols,
                figsize=(3.0 * ncols, 2.4 * nrows + 0.4),
                squeeze=False,
                sharex=True,
                sharey=True,
            )
            top_n = max(int(v[hk].max()) for v in occ.values())
            bins, logx = _hist_bins(top_n)
            base = methods[0]
            shift = 1 if logx else 0
            width = np.diff(bins)

            def hist(ax, values, **kw):
                # log-spaced bins: items per unit of N_k, so wider bins do not look taller
                counts, _ = np.histogram(values + shift, bins=bins)
                ax.stairs(counts / width if logx else counts, bins, **kw)

            for ax, m in zip(axes.ravel(), methods):
                hist(ax, occ[base][hk], fill=True, color="0.8", label=base)
                if m != base:
                    hist(ax, occ[m][hk], linewidth=1.6, color="C0", label=m)
                ax.set_yscale("log")
                if logx:
                    ax.set_xscale("log")
                ax.set_title(f"{m} (max {int(occ[m][hk].max())})", fontsize=9)
                ax.tick_params(labelsize=8)
            for ax in axes.ravel()[len(methods) :]:
                ax.set_visible(False)
            fig.supxlabel(
                f"N_{hk}{' + 1' if logx else ''}: queries that have the item in their top {hk}", fontsize=9
            )
            fig.supylabel("gallery items" + (" per unit of N_k (log bins)" if logx else ""), fontsize=9)
            fig.suptitle(f"k-occurrence N_{hk}, {dd['name']} (grey: {base})", fontsize=10)
            out.append((f"k-occurrence histograms N_{hk}, {dd['name']}, one panel per method", _png(fig)))
        for m, md in dd["methods"].items():
            grid = md["sweep"]["grid"]
            numeric = all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for v in grid.values() for x in v
            )
            if len(grid) != 2 or any(len(v) < 2 for v in grid.values()) or not numeric:
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
    dirs = list(d["directions"].values())
    # metric values with CIs: one row per method (readable with many methods)
    n_methods = max(len(dd["methods"]) for dd in dirs)
    fig, axes = subplots(1, len(dirs), figsize=(5.5 * len(dirs), 1.2 + 0.45 * n_methods), squeeze=False)
    for ax, dd in zip(axes[0], dirs):
        per = dd["bootstrap"]["per_method"]
        methods = list(per)
        y = np.arange(len(methods))
        for j, k in enumerate(ks):
            vals = np.array([per[m][f"success@{k}"]["value"] for m in methods]) * 100
            lows = np.array([per[m][f"success@{k}"]["ci_low"] for m in methods]) * 100
            highs = np.array([per[m][f"success@{k}"]["ci_high"] for m in methods]) * 100
            off = (j - (len(ks) - 1) / 2) * 0.22
            ax.errorbar(
                vals, y + off, xerr=[vals - lows, highs - vals], fmt="o", capsize=3, label=f"success@{k}"
            )
        ax.set_yticks(y, methods)
        ax.invert_yaxis()
        ax.set_xlabel("% of queries")
        ax.set_title(dd["name"])
        ax.legend(fontsize=8)
    out.append((f"Test success@K with {conf}% bootstrap CIs", _png(fig)))
    # paired differences with their CIs (forest plot)
    metrics = list(dict.fromkeys([f"success@{ks[0]}", f"success@{ks[-1]}", "mAP@R"]))
    n_cmp = max(len(dd["bootstrap"]["differences"]) for dd in dirs)
    if n_cmp:
        fig, axes = subplots(
            len(dirs),
            len(metrics),
            figsize=(4.2 * len(metrics), (1.0 + 0.4 * n_cmp) * len(dirs)),
            squeeze=False,
        )
        for row, dd in zip(axes, dirs):
            diffs = dd["bootstrap"]["differences"]
            names = list(diffs)
            y = np.arange(len(names))
            for ax, metric in zip(row, metrics):
                xs = [diffs[n].get(metric) for n in names]
                delta = np.array([x["delta"] if x else np.nan for x in xs]) * 100
                lows = np.array([x["ci_low"] if x else np.nan for x in xs]) * 100
                highs = np.array([x["ci_high"] if x else np.nan for x in xs]) * 100
                colors = ["C2" if a > 0 else ("C3" if b < 0 else "0.4") for a, b in zip(lows, highs)]
                ax.axvline(0, color="0.5", linewidth=1)
                for yi, dv, a, b, c in zip(y, delta, lows, highs, colors):
                    ax.errorbar([dv], [yi], xerr=[[dv - a], [b - dv]], fmt="o", color=c, capsize=3)
                ax.set_yticks(y, names if ax is row[0] else [""] * len(names))
                ax.invert_yaxis()
                ax.set_xlabel(f"delta {metric} (points)")
                ax.set_title(f"{dd['name']}: {metric}", fontsize=10)
        out.append(
            (
                f"Paired differences with {conf}% bootstrap CIs (green: CI above 0, red: below, grey: spans 0)",
                _png(fig),
            )
        )
    return out


def html_report(
    result: EvaluationResult, *, plots: bool = True, sections: ExtraSections | None = None
) -> tuple[str, bool]:
    """(HTML text, whether plots were drawn)."""
    d = result.data
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>dehub evaluation: {esc(d['benchmark']['name'])}</title>",
        "<style>body{font-family:sans-serif;max-width:1360px;margin:2em auto;}"
        "table{border-collapse:collapse;margin:1em 0;}td,th{border:1px solid #ccc;padding:3px 8px;}"
        "td{white-space:nowrap;}td.text{white-space:normal;}"
        "th{background:#eee;}img{max-width:100%;}</style>",
        "</head>",
        "<body>",
        f"<h1>dehub evaluation: {esc(d['benchmark']['name'])}</h1>",
        f"<p>dehub {esc(d['versions']['dehub'])}, numpy {esc(d['versions']['numpy'])}; "
        f"seed {d['settings']['seed']}, {d['settings']['n_bootstrap']} bootstrap resamples; "
        f"total time {d['timings']['total_seconds']:.1f} s.</p>",
    ]
    if d.get("command"):
        parts.append(f"<p>Made by: <code>{esc(d['command'])}</code></p>")
    auto = _auto_lines(d)
    if auto:
        parts.append("<p>Engine: " + "<br>".join(esc(line.strip()) for line in auto) + "</p>")
    notes = _notes(result)
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    tables = _tables(result)
    # The headline table, then the plots a reader looks at first, then the long tables.
    parts += _html_table(*tables[0])
    drawn = False
    if plots:
        try:
            images = _plots(result)
            drawn = True
        except ImportError:
            images = []
        parts.append("<h2>Plots</h2>")
        if not drawn:
            parts.append(
                "<p>Plots skipped: matplotlib is not installed (pip install matplotlib, or pip install -e '.[plot]' in a dehub clone).</p>"
            )
        for caption, png in images:
            parts.append(
                f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{png}">'
                f"<figcaption>{esc(caption)}</figcaption></figure>"
            )
    for table in tables[1:]:
        parts += _html_table(*table)
    if d.get("studies") and sections is not None:  # dehub eval --studies (dehub.studies.report)
        parts += sections.html(d["studies"], _png, plots=plots)
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts), drawn


def _html_table(title: str, head: list[str], rows: list[list[str]]) -> list[str]:
    esc = html.escape
    parts = [f"<h2>{esc(title)}</h2>"]
    parts.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>")
    wrap = {i for i, h in enumerate(head) if h in ("text", "setting", "chosen setting", "per hub")}
    for r in rows:
        parts.append(
            "<tr>"
            + "".join(
                f'<td class="text">{esc(c)}</td>' if i in wrap else f"<td>{esc(c)}</td>"
                for i, c in enumerate(r)
            )
            + "</tr>"
        )
    parts.append("</tbody></table>")
    return parts


def write_report(
    result: EvaluationResult,
    out_dir: str | Path,
    *,
    plots: bool = True,
    sections: ExtraSections | None = None,
) -> dict[str, Any]:
    """Write report.json, report.md and report.html into ``out_dir`` (created if needed).

    ``sections`` renders the ``studies`` part of the result (``dehub.studies.report``'s
    :data:`~dehub.studies.report.STUDY_SECTIONS`, passed in by the caller: evaluation does
    not import studies); without it that part is kept in report.json only.

    Returns ``{"json": path, "markdown": path, "html": path, "plots": bool}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page, drawn = html_report(result, plots=plots, sections=sections)
    result.data.setdefault("report", {})["plots"] = "drawn" if drawn else "skipped"
    paths = {"json": out / "report.json", "markdown": out / "report.md", "html": out / "report.html"}
    atomic_write_text(paths["json"], to_json(result))
    atomic_write_text(paths["markdown"], markdown_summary(result, sections=sections))
    atomic_write_text(paths["html"], page)
    return {**{k: str(v) for k, v in paths.items()}, "plots": drawn}
