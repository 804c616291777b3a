"""The evaluation harness: metrics, hubness, paired bootstrap, validation sweep, protocol, report.

Four layers, each importing only the ones below it (``.importlinter``, docs/architecture.md):

* measurement: :mod:`.metrics`, :mod:`.statistics` (paired bootstrap CIs), :mod:`.hubness`,
  :mod:`.findings` (duplicates, top hubs, identical rankings), :mod:`.engine_eval`;
* orchestration: :mod:`.protocol` (``run_evaluation``), :mod:`.inputs` (checked once at its
  entry), :mod:`.result` (``EvaluationResult``), :mod:`.sweep`, :mod:`.best`;
* :mod:`.report` (JSON, Markdown, HTML, plots of a finished result);
* :mod:`.cli` (``dehub eval``).

Importing this package needs only numpy; plots need matplotlib (``dehub[plot]``).
"""

from .hubness import compare_hubness, hubness_stats, k_occurrence, occurrence_histogram
from .metrics import (
    QueryOutcomes,
    dense_ranks,
    evaluate_topk,
    first_relevant_rank_dense,
    first_relevant_rank_topk,
    outcomes_from_ranks,
    paired_metrics,
    retrieval_metrics,
)
from .protocol import EvaluationResult, check_benchmark, run_evaluation
from .report import write_report
from .statistics import bootstrap_comparisons, bootstrap_distribution, paired_bootstrap
from .sweep import SweepResult, fit_selected, select_best, sweep

__all__ = [
    "QueryOutcomes",
    "first_relevant_rank_topk",
    "first_relevant_rank_dense",
    "dense_ranks",
    "evaluate_topk",
    "outcomes_from_ranks",
    "retrieval_metrics",
    "paired_metrics",
    "k_occurrence",
    "hubness_stats",
    "compare_hubness",
    "occurrence_histogram",
    "paired_bootstrap",
    "bootstrap_comparisons",
    "bootstrap_distribution",
    "SweepResult",
    "sweep",
    "select_best",
    "fit_selected",
    "EvaluationResult",
    "run_evaluation",
    "check_benchmark",
    "write_report",
]
