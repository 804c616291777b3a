"""Studies beyond the paper: hub audit and admission gate, reference poisoning, drift,
fairness (Bias@K), robustness to noisy queries, controlled shift on the WordNet
hierarchy. Each study is one module; :mod:`dehub.studies.runner` runs them by name for
``dehub eval --studies``. See docs/studies.md."""

from .audit import AdmissionGate, audit_gallery, gate_new_items, robust_z
from .drift import DriftMonitor, ks_two_sample, nearest_similarity
from .fairness import bias_at_k
from .poisoning import cap_influence, filter_near_duplicates, filter_outliers, poison_queries
from .runner import STUDIES, run_studies

__all__ = [
    "AdmissionGate",
    "audit_gallery",
    "gate_new_items",
    "robust_z",
    "DriftMonitor",
    "ks_two_sample",
    "nearest_similarity",
    "bias_at_k",
    "poison_queries",
    "cap_influence",
    "filter_near_duplicates",
    "filter_outliers",
    "STUDIES",
    "run_studies",
]
