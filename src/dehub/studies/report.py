"""Markdown tables and HTML plots of ``report["studies"]`` (called by evaluation.report)."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

__all__ = [
    "study_tables",
    "study_plots",
    "study_headlines",
    "markdown_sections",
    "html_sections",
    "STUDY_SECTIONS",
]

Table = tuple[str, list[str], list[list[str]]]


def _p(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _ci(e: dict[str, Any]) -> str:
    return f"{_p(e['value'])} [{_p(e['ci_low'])}, {_p(e['ci_high'])}]"


def _dci(e: dict[str, Any]) -> str:
    return f"{100 * e['delta']:+.2f} [{100 * e['ci_low']:+.2f}, {100 * e['ci_high']:+.2f}]"


def _rate(e: dict[str, Any]) -> str:
    return f"{_p(e['success_rate'])} [{_p(e['ci_low'])}, {_p(e['ci_high'])}]"


def _audit_tables(s: dict[str, Any]) -> list[Table]:
    out: list[Table] = []
    det = []
    for name, a in s["attacks"].items():
        au, g = a["audit"], a["gate"]
        det.append(
            [
                name,
                f"{a['hub_N_k_reference_plain']['median']:.0f} (gallery {a['hub_N_k_reference_plain']['gallery_median']:.0f})",
                f"{a['hub_N_k_reference_nnn']['median']:.0f}",
                f"{_p(au['precision'])} [{_p(au['precision_ci'][0])}, {_p(au['precision_ci'][1])}] of {au['n_flagged']}",
                f"{_p(au['recall'])} [{_p(au['recall_ci'][0])}, {_p(au['recall_ci'][1])}]",
                f"{_p(au['precision_at_n_planted'])}",
                f"{_p(g['recall'])} [{_p(g['recall_ci'][0])}, {_p(g['recall_ci'][1])}]",
                f"{_p(g['false_flag_rate_clean_items'])} [{_p(g['false_flag_ci'][0])}, {_p(g['false_flag_ci'][1])}]",
            ]
        )
    out.append(
        (
            "Audit: planted hubs, detection (Wilson 95% CIs)",
            [
                "attack",
                "median N_k plain",
                "median N_k nnn",
                "audit precision %",
                "audit recall %",
                "precision@n_planted %",
                "gate recall %",
                "gate false flags %",
            ],
            det,
        )
    )
    rows = []
    for name, a in s["attacks"].items():
        for m, e in a["captured_top1"]["per_arm"].items():
            diff = a["captured_top1"]["differences"].get(f"{m} - plain")
            acc = a["success@1"]["per_arm"][m]
            rows.append([name, m, _ci(e), "-" if diff is None else _dci(diff), _ci(acc)])
    out.append(
        (
            "Audit: test queries captured at top-1 by the planted hubs (%, paired bootstrap 95% CI)",
            ["attack", "method", "captured %", "vs plain (points)", "success@1 %"],
            rows,
        )
    )
    return out


def _poison_tables(s: dict[str, Any]) -> list[Table]:
    out: list[Table] = []
    budgets = s["setting"]["budgets"]
    for mode in ("demote", "promote"):
        rows = [[m] + [_rate(e) for e in curve] for m, curve in s[mode].items()]
        out.append(
            (
                f"Poisoning ({mode}): attack success % by budget m (poisons per target; Wilson 95% CI)",
                ["method"] + [f"m={b}" for b in budgets],
                rows,
            )
        )
    if "defences" in s:
        d = s["defences"]
        bs = [e["budget"] for e in next(iter(d["curves"].values()))]
        rows = [[n] + [_rate(e) for e in c] for n, c in d["curves"].items()]
        out.append(
            ("Poisoning defences (NNN, demotion success %)", ["defence"] + [f"m={b}" for b in bs], rows)
        )
        cs = d["clean_success@1"]
        rows = [
            [
                a,
                _ci(e),
                "-" if f"{a} - none" not in cs["differences"] else _dci(cs["differences"][f"{a} - none"]),
            ]
            for a, e in cs["per_arm"].items()
        ]
        out.append(
            ("Poisoning defences: clean success@1 (no attack)", ["bank", "success@1 %", "vs none"], rows)
        )
    return out


def _drift_tables(s: dict[str, Any]) -> list[Table]:
    rows = []
    checks = dict(s["checks"])
    if s.get("ood_bank_check"):
        checks["the other side's reference bank"] = s["ood_bank_check"]
    for name, c in checks.items():
        rows.append(
            [
                name,
                f"{c['live_median']:.3f} vs {c['null_median']:.3f}",
                f"{c['ks_statistic']:.3f}",
                f"{c['p_value']:.2g}",
                "yes" if c["out_of_distribution"] else "no",
            ]
        )
    fa = s["false_alarm"]
    fa_text = (
        "reference too small for the false-alarm check"
        if fa is None
        else f"false-alarm rate at level {fa['level']} on same-distribution splits: {_p(fa['rate'])}% "
        f"[{_p(fa['ci_low'])}, {_p(fa['ci_high'])}] over {fa['n_trials']} trials"
    )
    out: list[Table] = [
        (
            f"Drift: nearest-reference similarity vs held-out reference rows (KS, level 0.01); {fa_text}",
            ["query set", "median similarity live vs null", "KS D", "p", "out of distribution"],
            rows,
        )
    ]
    g = s["gain_by_bank"]
    rows = [
        [a, _ci(e), "-" if f"{a} - plain" not in g["differences"] else _dci(g["differences"][f"{a} - plain"])]
        for a, e in g["per_arm"].items()
    ]
    out.append(
        ("Drift: success@1 of test queries by bank and alpha", ["setting", "success@1 %", "vs plain"], rows)
    )
    return out


def _fair_tables(s: dict[str, Any]) -> list[Table]:
    rows = []
    for k, r in s["K"].items():
        for a, e in r["per_arm"].items():
            rows.append([k, a, f"{e['value']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]"])
    return [(f"Fairness: Bias@K, {s['protocol']}", ["K", "method", "Bias@K (95% CI)"], rows)]


def _robust_tables(s: dict[str, Any]) -> list[Table]:
    acc = s["success@1"]
    rows = []
    for k in ["clean", *s["texts_changed"]]:
        d = acc["differences"][f"nnn {k} - plain {k}"]
        ch = s["gain_change"]["differences"].get(f"{k} - clean")
        rows.append(
            [
                k,
                "-" if k == "clean" else f"{_p(s['texts_changed'][k])}",
                _ci(acc["per_arm"][f"plain {k}"]),
                _ci(acc["per_arm"][f"nnn {k}"]),
                _dci(d),
                "-" if ch is None else _dci(ch),
            ]
        )
    return [
        (
            f"Robustness: {s['n_queries']} test queries re-embedded ({s['texts_per_second']:.0f} texts/s)",
            [
                "queries",
                "texts changed %",
                "plain success@1 %",
                "nnn success@1 %",
                "nnn gain",
                "gain vs clean",
            ],
            rows,
        )
    ]


def _shift_tables(s: dict[str, Any]) -> list[Table]:
    acc = s["success@1"]
    rows = []
    for a, e in acc["per_arm"].items():
        d = acc["differences"].get(f"{a} - plain")
        g = a.split()[1] if a.startswith("nnn ") else ""
        cp = s["chosen_params"].get(g) if a.endswith("(tuned)") else None
        rows.append(
            [
                a,
                _ci(e),
                "-" if d is None else _dci(d),
                "-" if cp is None else f"k={cp['k']}, alpha={cp['alpha']}",
            ]
        )
    return [
        (
            f"Shift (WordNet hierarchy, level {s['level']}): {s['n_test_queries']} test queries of "
            f"{s['n_targets']} target subtrees; banks of {s['n_bank']} reference definitions per group",
            ["bank", "success@1 %", "vs plain", "validation-chosen setting"],
            rows,
        )
    ]


_TABLES: dict[str, Callable[[dict[str, Any]], list[Table]]] = {
    "audit": _audit_tables,
    "poisoning": _poison_tables,
    "drift": _drift_tables,
    "fairness": _fair_tables,
    "robustness": _robust_tables,
    "shift": _shift_tables,
}


def _pts(e: dict[str, Any]) -> str:
    """A paired difference in points with its CI, e.g. ``-3.20 [-4.10, -2.30] points``."""
    return f"{_dci(e)} points"


def _audit_headline(s: dict[str, Any]) -> str:
    parts = []
    for name, a in s["attacks"].items():
        cap = a["captured_top1"]
        arms = cap["per_arm"]
        text = f"planted hubs ({name}) win {_p(arms['plain']['value'])}% of test queries at top-1 with plain"
        diff = cap["differences"].get("nnn - plain")
        if "nnn" in arms and diff is not None:
            text += f", {_p(arms['nnn']['value'])}% with NNN ({_pts(diff)})"
        text += f"; the audit flags {_p(a['audit']['recall'])}% of them"
        parts.append(text)
    return "; ".join(parts)


def _poison_headline(s: dict[str, Any]) -> str:
    parts = []
    for mode in ("demote", "promote"):
        curves = s[mode]
        if not curves:
            continue
        top = next(iter(curves.values()))[-1]["budget"]
        rates = ", ".join(f"{m} {_p(c[-1]['success_rate'])}%" for m, c in curves.items())
        parts.append(f"{mode} attacks with {top} poisons per target succeed: {rates}")
    return "; ".join(parts)


def _drift_headline(s: dict[str, Any]) -> str:
    checks = s["checks"]
    flagged = [name for name, c in checks.items() if c["out_of_distribution"]]
    text = f"{len(flagged)} of {len(checks)} query sets flagged out of distribution"
    if flagged:
        text += f" ({', '.join(flagged)})"
    fa = s.get("false_alarm")
    if fa is not None:
        text += f"; false alarms {_p(fa['rate'])}% over {fa['n_trials']} same-distribution splits"
    diffs = s["gain_by_bank"]["differences"]
    if diffs:
        best = max(diffs, key=lambda k: diffs[k]["delta"])
        text += f"; best bank setting {best.removesuffix(' - plain')}: {_pts(diffs[best])} success@1 vs plain"
    return text


def _fair_headline(s: dict[str, Any]) -> str:
    k = max(s["K"], key=int)
    arms = s["K"][k]["per_arm"]
    vals = ", ".join(f"{a} {e['value']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]" for a, e in arms.items())
    return f"Bias@{k} ({s['protocol']}): {vals}"


def _robust_headline(s: dict[str, Any]) -> str:
    diffs = s["success@1"]["differences"]
    parts = [f"NNN's success@1 gain on clean queries {_pts(diffs['nnn clean - plain clean'])}"]
    for k, changed in s["texts_changed"].items():
        ch = s["gain_change"]["differences"].get(f"{k} - clean")
        parts.append(
            f"{k} ({_p(changed)}% of texts changed) {_pts(diffs[f'nnn {k} - plain {k}'])}"
            + ("" if ch is None else f", {_pts(ch)} vs clean")
        )
    return "; ".join(parts)


def _shift_headline(s: dict[str, Any]) -> str:
    diffs = s["success@1"]["differences"]
    if not diffs:
        return f"{s['n_test_queries']} test queries; no bank to compare with plain"
    best = max(diffs, key=lambda k: diffs[k]["delta"])
    worst = min(diffs, key=lambda k: diffs[k]["delta"])
    return (
        f"best bank {best.removesuffix(' - plain')}: {_pts(diffs[best])} success@1 vs plain; "
        f"worst {worst.removesuffix(' - plain')}: {_pts(diffs[worst])} ({s['n_test_queries']} test queries)"
    )


_HEADLINES: dict[str, Callable[[dict[str, Any]], str]] = {
    "audit": _audit_headline,
    "poisoning": _poison_headline,
    "drift": _drift_headline,
    "fairness": _fair_headline,
    "robustness": _robust_headline,
    "shift": _shift_headline,
}


def study_headlines(studies: dict[str, Any]) -> list[str]:
    """One line per study: its headline finding with the numbers (``dehub eval --studies`` prints them)."""
    return [
        f"{name}: {_HEADLINES[name](s)} ({s.get('runtime_seconds', float('nan')):.1f} s)"
        for name, s in studies.items()
        if name in _HEADLINES
    ]


def study_tables(studies: dict[str, Any]) -> list[Table]:
    out: list[Table] = []
    for name, s in studies.items():
        if name in _TABLES:
            out += _TABLES[name](s)
            out.append((f"{name}: runtime", ["seconds"], [[f"{s.get('runtime_seconds', float('nan')):.1f}"]]))
    return out


def study_plots(studies: dict[str, Any], png: Callable[[Any], str]) -> list[tuple[str, str]]:
    """(caption, base64 png) per plot; raises ImportError without matplotlib."""
    from matplotlib.figure import Figure

    out = []
    if "poisoning" in studies:
        s = studies["poisoning"]
        panels = [("demote", s["demote"]), ("promote", s["promote"])]
        if "defences" in s:
            curves = s["defences"]["curves"]
            budgets = {e["budget"] for c in curves.values() for e in c}
            none = [e for e in s["demote"].get("nnn", []) if e["budget"] in budgets]
            panels.append(("defences (nnn, demote)", {"none": none, **curves} if none else curves))
        fig = Figure(figsize=(5 * len(panels), 3.6), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (title, curves) in zip(axes, panels, strict=True):
            for m, c in curves.items():
                x = [max(e["budget"], 0.5) for e in c]
                y = [100 * e["success_rate"] for e in c]
                ax.plot(x, y, marker="o", label=m)
                ax.fill_between(x, [100 * e["ci_low"] for e in c], [100 * e["ci_high"] for e in c], alpha=0.2)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("poisons per target m (m=0 drawn at 0.5)")
            ax.set_ylabel("attack success %")
            ax.set_title(title, fontsize=10)
            ax.legend(fontsize=7)
        out.append(("Reference poisoning: success vs budget with Wilson 95% bands", png(fig)))
    if "audit" in studies:
        s = studies["audit"]
        fig = Figure(figsize=(9, 3.4), layout="constrained")
        axes = fig.subplots(1, len(s["attacks"]), squeeze=False)[0]
        for ax, (name, a) in zip(axes, s["attacks"].items(), strict=True):
            arms = a["captured_top1"]["per_arm"]
            names = list(arms)
            v = [100 * arms[m]["value"] for m in names]
            err = [
                [100 * (arms[m]["value"] - arms[m]["ci_low"]) for m in names],
                [100 * (arms[m]["ci_high"] - arms[m]["value"]) for m in names],
            ]
            ax.bar(names, v, yerr=err, capsize=4)
            ax.set_ylabel("test queries captured at top-1 %")
            ax.set_title(f"planted hubs: {name}", fontsize=10)
        out.append(("Planted hubs: share of test queries they win, 95% bootstrap CIs", png(fig)))
    if "drift" in studies:
        g = studies["drift"]["gain_by_bank"]["per_arm"]
        names = list(g)
        fig = Figure(figsize=(7, 3.4), layout="constrained")
        ax = fig.subplots()
        v = [100 * g[m]["value"] for m in names]
        err = [
            [100 * (g[m]["value"] - g[m]["ci_low"]) for m in names],
            [100 * (g[m]["ci_high"] - g[m]["value"]) for m in names],
        ]
        ax.errorbar(v, range(len(names)), xerr=err, fmt="o", capsize=3)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("success@1 % (95% CI)")
        out.append(("Drift: success@1 with in- and out-of-distribution banks", png(fig)))
    return out


def markdown_sections(studies: dict[str, Any]) -> list[str]:
    out = ["", "# Studies", ""] + [f"- {line}" for line in study_headlines(studies)]
    for title, head, rows in study_tables(studies):
        out += ["", f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def html_sections(studies: dict[str, Any], png: Callable[[Any], str], *, plots: bool = True) -> list[str]:
    esc = html.escape
    parts = ["<h1>Studies</h1>"]
    for title, head, rows in study_tables(studies):
        parts.append(f"<h2>{esc(title)}</h2>")
        parts.append(
            "<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"
        )
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append("</tbody></table>")
    if plots:
        try:
            images = study_plots(studies, png)
        except ImportError:
            images = []
            parts.append("<p>Study plots skipped: matplotlib is not installed.</p>")
        for caption, img in images:
            parts.append(
                f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{img}">'
                f"<figcaption>{esc(caption)}</figcaption></figure>"
            )
    return parts


class _StudySections:
    """The studies' report sections, for :func:`dehub.evaluation.report.write_report`'s ``sections``."""

    @staticmethod
    def markdown(data: Any) -> list[str]:
        return markdown_sections(data)

    @staticmethod
    def html(data: Any, png: Callable[[Any], str], *, plots: bool) -> list[str]:
        return html_sections(data, png, plots=plots)

    @staticmethod
    def headlines(data: Any) -> list[str]:
        return study_headlines(data)


STUDY_SECTIONS = _StudySections()
