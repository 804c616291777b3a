"""The result of an evaluation: everything it measured, as JSON-able data, and its summary table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .best import BEST
from .metrics import QueryOutcomes

__all__ = ["EvaluationResult"]


@dataclass
class EvaluationResult:
    """Everything an evaluation measured.

    ``data`` is JSON-serializable (settings, seeds, versions, timings, sweep tables,
    test metrics with CIs, hubness); ``k_occurrence[direction][method][k]`` holds the
    full N_k vectors and ``outcomes[direction][method]`` the per-query outcomes (for
    plots and further statistics; not written to JSON).
    """

    data: dict[str, Any]
    k_occurrence: dict[str, dict[str, dict[int, np.ndarray]]] = field(default_factory=dict)
    outcomes: dict[str, dict[str, QueryOutcomes]] = field(default_factory=dict)

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per direction x method: success@K with CIs, MRR, top hub, chosen params."""
        rows = []
        for direction, d in self.data["directions"].items():
            boot = d["bootstrap"]["per_method"]
            for method, m in d["methods"].items():
                row = {"direction": d["name"], "method": method, "params": m["chosen_params"]}
                for k in self.data["settings"]["ks"]:
                    row[f"success@{k}"] = boot[method][f"success@{k}"]
                for name in ("mAP@R", "MRR"):
                    row[name] = boot[method][name]
                hk = self.data["settings"]["hub_ks"][0]
                row[f"max N_{hk}"] = m["hubness"][str(hk)]["max"]
                rows.append(row)
        return rows

    def summary_text(self) -> str:
        """A compact fixed-width table (what ``dehub eval`` prints)."""
        ks = self.data["settings"]["ks"]
        hk = self.data["settings"]["hub_ks"][0]
        rows = self.summary_rows()
        mw = max([8, *(len(r["method"]) for r in rows)])  # column widths fit the names
        dw = max(
            [14, *(len(n) for d in self.data["directions"].values() for n in d["bootstrap"]["differences"])]
        )
        head = (
            f"{'direction':<22} {'method':<{mw}} "
            + " ".join(f"{'success@' + str(k):>21}" for k in ks)
            + f" {'mAP@R':>6} {'MRR':>6} {'maxN' + str(hk):>6}  params"
        )
        lines = [head, "-" * len(head)]
        for r in rows:
            cells = " ".join(
                f"{100 * r[f'success@{k}']['value']:6.2f} [{100 * r[f'success@{k}']['ci_low']:5.2f},"
                f"{100 * r[f'success@{k}']['ci_high']:6.2f}]"
                for k in ks
            )
            params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
            lines.append(
                f"{r['direction']:<22} {r['method']:<{mw}} {cells} {100 * r['mAP@R']['value']:6.2f} "
                f"{100 * r['MRR']['value']:6.2f} {r[f'max N_{hk}']:>6}  {params}"
            )
        diffs = []
        for d in self.data["directions"].values():
            for name, metrics in d["bootstrap"]["differences"].items():
                for metric in [f"success@{k}" for k in ks] + ["mAP@R"]:
                    x = metrics[metric]
                    diffs.append(
                        f"{d['name']:<22} {name:<{dw}} {metric:<11} {100 * x['delta']:+6.2f} "
                        f"[{100 * x['ci_low']:+6.2f}, {100 * x['ci_high']:+6.2f}]"
                    )
        conf = self.data["settings"]["confidence"]
        lines.append(
            "success@K: share of queries with a relevant item in the top K (the paper's R@K); "
            "mAP@R and MRR in %"
        )
        for d in self.data["directions"].values():
            for note in d.get("notes", []):
                lines.append(f"note ({d['name']}): {note}")
        lines.append("")
        lines.append(
            f"paired differences (points, {int(100 * conf)}% bootstrap CI, "
            f"{self.data['settings']['n_bootstrap']} resamples, seed {self.data['settings']['seed']}):"
        )
        lines.extend(diffs)
        for d in self.data["directions"].values():  # issue 14: what best chose and why
            chosen = d["methods"].get(BEST, {}).get("best")
            if chosen:
                lines.append(
                    f"{d['name']}: best chose {chosen['member']} {chosen['params']}: {chosen['reason']}"
                )
        lines.append(f"total time {self.data['timings']['total_seconds']:.1f} s")
        return "\n".join(lines)
