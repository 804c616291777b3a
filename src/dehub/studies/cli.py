"""``dehub audit INDEX --reference R [--queries Q]`` and the ``dehub add --gate`` check."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from .._cli_support import load_npy, positive_int
from .._errors import InputError
from .._loading import load
from ..datasets.pairs import read_pairs
from ..relevance import Relevance
from .audit import AdmissionGate, audit_gallery
from .report import STUDY_SECTIONS
from .runner import check_study_names, json_ready, run_studies

__all__ = ["SUBCOMMANDS", "STUDY_RUNNER", "StudyRunner", "gate_for_add"]


class StudyRunner(NamedTuple):
    """What ``dehub eval --studies`` calls (bound by ``dehub.cli``: evaluation does not import studies)."""

    check: Callable[[Sequence[str]], list[str]]
    run: Callable[..., dict[str, Any]]
    sections: Any  # dehub.evaluation.report.ExtraSections: renders the studies in the report


STUDY_RUNNER = StudyRunner(check=check_study_names, run=run_studies, sections=STUDY_SECTIONS)

_HELP = "audit an index for hubs: k-occurrence over reference (and live) queries, robust z, top suspects"

_EXAMPLES = """examples:
  dehub audit index.dehub --reference ref.npy
  dehub audit index.dehub --reference ref.npy --queries live.npy --sample 5000 --top 30 --json
  dehub audit index.dehub                      # an index built with --keep-reference
  dehub audit index.dehub --queries live.npy --pairs live_pairs.csv   # are the hubs right answers?
"""


def _setup(p: argparse.ArgumentParser) -> None:
    p.epilog = _EXAMPLES
    p.add_argument("index", help="index file written by 'dehub build'")
    p.add_argument(
        "--reference", help="reference queries (.npy or shard directory); default: the index's own"
    )
    p.add_argument("--queries", help="live queries to audit with as well (.npy or shard directory)")
    p.add_argument("--sample", type=positive_int, help="use a random sample of this many --queries")
    p.add_argument(
        "--pairs",
        help="relevance of --queries (CSV query_row,gallery_id or JSONL; query rows are --queries row "
        "numbers, gallery ids the index's): report how many of each top hub's top-1 wins are right",
    )
    p.add_argument("--k", type=positive_int, default=10, help="k of the k-occurrence N_k (default 10)")
    p.add_argument("--z", type=float, default=6.0, help="robust z above which an item is flagged (default 6)")
    p.add_argument("--top", type=positive_int, default=20, help="suspects listed (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    p.add_argument("--json", action="store_true", help="print the audit as JSON")


def _reference_of(index: Any, path: str | None, what: str) -> np.ndarray:
    if path:
        ref = np.asarray(load_npy(path, what), dtype=np.float32)
    elif index.reference is not None:
        ref = np.asarray(index.reference, dtype=np.float32)
    else:
        raise InputError(
            f"this index holds no reference set; give {what} (the reference queries it was built with)"
        )
    if ref.ndim != 2 or ref.shape[1] != index.dim:
        raise InputError(f"{what} must be (n, {index.dim}); received shape {ref.shape}")
    return ref


def _relevance_of(path: str, n_queries: int, index: Any):
    q_ids, g_ids = read_pairs(path)
    row_of = {str(i): r for r, i in enumerate(np.asarray(index.ids).tolist())}
    try:
        q_rows = [int(q) for q in q_ids]
    except ValueError:
        raise InputError(
            f"--pairs: query ids must be --queries row numbers; received e.g. {q_ids[:3]}"
        ) from None
    bad_q = [q for q in q_rows if not 0 <= q < n_queries]
    missing = [g for g in g_ids if g not in row_of]
    if bad_q or missing:
        raise InputError(
            f"--pairs: {len(bad_q)} query rows outside [0, {n_queries}) (e.g. {bad_q[:3]}) and "
            f"{len(missing)} gallery ids not in the index (e.g. {missing[:3]})"
        )
    return Relevance.from_pairs(q_rows, [row_of[g] for g in g_ids], n_queries, len(row_of))


def _run(args: argparse.Namespace) -> int:
    index = load(args.index)
    reference = _reference_of(index, args.reference, "--reference")
    queries = None
    if args.queries:
        queries = np.asarray(load_npy(args.queries, "--queries"), dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != index.dim:
            raise InputError(f"--queries must be (n, {index.dim}); received shape {queries.shape}")
    if args.z <= 0:
        raise InputError(f"--z must be positive; received {args.z}")
    relevance = None
    if args.pairs:
        if queries is None:
            raise InputError("--pairs gives the relevance of --queries: pass --queries too")
        relevance = _relevance_of(args.pairs, queries.shape[0], index)
    gallery = np.asarray(index.model.gallery_, dtype=np.float32)
    res = audit_gallery(
        gallery,
        reference,
        queries=queries,
        n_sample=args.sample,
        k=args.k,
        model=index.model,
        z_threshold=args.z,
        top=args.top,
        ids=index.ids,
        seed=args.seed,
        relevance=relevance,
    )
    if args.json:
        print(json.dumps(json_ready(res), indent=1))
        return 0
    print(
        f"{res['n_gallery']} items, {res['n_reference']} reference + {res['n_live_queries']} live queries, "
        f"k={res['k']} (expected N_k {res['expected_N']:.1f}); correction {res['correction']}"
    )
    print(
        f"flagged (robust z > {res['z_threshold']:g}): {res['n_flagged']}; max N_k {res['max_N_before']} plain, "
        f"{res['max_N_after']} corrected"
    )
    print(
        f"{'id':>12} {'N plain':>8} {'z':>7} {'rank':>6} {'N corr':>7} {'z corr':>7} {'rank':>6} {'bias':>8}  flag"
    )
    for s in res["suspects"]:
        bias = "-" if s["bias"] is None else f"{s['bias']:.4f}"
        print(
            f"{s['id']:>12} {s['N_before']:>8} {s['z_before']:>7.1f} {s['hub_rank_before']:>6} "
            f"{s['N_after']:>7} {s['z_after']:>7.1f} {s['hub_rank_after']:>6} {bias:>8}  {'*' if s['flagged'] else ''}"
        )
    if res.get("finding"):
        print(res["finding"])
    sys.stdout.flush()
    return 0


def gate_for_add(
    index: Any,
    vectors: np.ndarray,
    reference: np.ndarray | None,
    mode: str,
    *,
    k: int = 10,
    z: float = 6.0,
) -> None:
    """``dehub add --gate``: score the new items against the sentinel (reference) queries.

    Called by ``Index.add`` (its ``admit`` hook) with the new rows and the reference as
    validated there (the gallery's dimension, L2-normalized with ``--normalize l2``).
    ``mode="flag"`` prints a warning naming the would-be hubs and lets the add proceed;
    ``mode="refuse"`` raises an :class:`InputError` (nothing is written) when any item would be one.
    """
    if reference is None:
        raise InputError(
            "--gate needs sentinel queries: give --reference (or build the index with --keep-reference)"
        )
    sentinels = np.asarray(reference, dtype=np.float32)
    items = np.asarray(vectors, dtype=np.float32)
    gallery = np.asarray(index.model.gallery_, dtype=np.float32)
    res = AdmissionGate(k=k, z_threshold=z).fit(gallery, sentinels).score(items)
    rows = np.flatnonzero(res["flag"])
    if rows.size == 0:
        print(
            f"gate: {items.shape[0]} new items checked against {sentinels.shape[0]} sentinel queries: none would be a hub"
        )
        return
    detail = ", ".join(
        f"row {r} (would enter {res['N'][r]} top-{k} lists, z {res['z'][r]:.1f})" for r in rows[:10]
    )
    more = f" and {rows.size - 10} more" if rows.size > 10 else ""
    msg = f"{rows.size} of {items.shape[0]} new items would be hubs (robust z > {z:g} over the gallery): {detail}{more}"
    if mode == "refuse":
        raise InputError(f"--gate refuse: {msg}; nothing was written")
    print(f"warning: gate: {msg}", file=sys.stderr)


#: name -> (help, setup(parser), run(args)); merged by dehub.cli
SUBCOMMANDS = {"audit": (_HELP, _setup, _run)}
