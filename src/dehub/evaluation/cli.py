"""``dehub eval``: run the evaluation protocol and write a report.

With no data arguments it evaluates the bundled WordNet reverse-dictionary benchmark.
User data: either ``--karpathy`` (COCO/Flickr30k split JSON) with ``--image-embeddings``
and ``--caption-embeddings``, or ``--queries/--gallery/--pairs/--reference`` plus
``--val-queries/--val-gallery/--val-pairs`` (one direction, queries -> gallery).
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from .._cli_support import add_normalize_option, json_object, nonnegative_int, positive_int
from .._errors import InputError
from ..datasets import loaders
from ..datasets.wordnet import load_wordnet_benchmark
from ..methods import METHODS
from .best import DEFAULT_BUDGET, default_members
from .metrics import canonical_metric, check_ks
from .protocol import method_parameters, run_evaluation
from .report import write_report

__all__ = ["SUBCOMMANDS"]

_HELP = "run the evaluation protocol (validation sweep, test metrics with CIs, hubness) and write a report"

_FILE_ARGS = ("queries", "gallery", "pairs", "reference", "val_queries", "val_gallery", "val_pairs")

_EXAMPLES = """examples:
  dehub eval                                              # the bundled WordNet benchmark
  dehub eval --methods plain,nnn,csls,qbnorm,dbnorm,dn    # the whole family, side by side
  dehub eval --methods nnn --params '{"k": 16, "alpha": 0.75}'   # a fixed setting, no sweep
  dehub eval --methods nnn,qbnorm --params '{"nnn": {"k": 16}, "qbnorm": {"beta": 20}}'
  dehub eval --karpathy dataset_coco.json --image-embeddings img.npy --caption-embeddings cap.npy
  dehub eval --queries q.npy --gallery g.npy --pairs pairs.csv --reference ref_emb/ \\
             --val-queries vq.npy --val-gallery vg.npy --val-pairs vpairs.csv --normalize l2
  dehub eval --n-bootstrap 2000 --seed 1 --quiet -o reports/mine

embedding arguments take a .npy file or a directory of .npy shards. Validation, test and
reference sets are compared by content: shared rows are an error (--allow-overlap to accept).

--params: one setting ('{"k": 16}') applies each parameter to the methods that have it;
per-method settings ('{"nnn": {"k": 16}}') name the methods.

gallery banks: DBNorm, DN, InvGC and DBSN take a gallery-modality bank; the bundled
benchmark's natural one is the reference split's gallery side (--gallery-bank natural,
the default). Without one (--gallery-bank none) they fall back to their no-bank form and
DBSN (= SN exactly) is not run; the report says which bank every method used.
"""


def _best_epilog() -> str:
    members = ", ".join(m for m in default_members() if m != "plain")
    return (
        "\nbest (--methods ...,best): chooses per direction on the validation split among no "
        "correction (plain: always a candidate, kept unless a member beats it by more than "
        f"its paired-bootstrap CI) and: {members}. A member whose sweep the cost model "
        f"estimates (from the shapes, before running) at more than --best-budget (default "
        f"{DEFAULT_BUDGET:g}) times NNN's sweep is skipped and named in the report "
        "(--best-include to run it).\n"
    )


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, e.g. 1,5,10; received {text!r}"
        ) from None


def _setup(p: argparse.ArgumentParser) -> None:
    p.epilog = _EXAMPLES + _best_epilog()
    p.add_argument(
        "--methods",
        type=_csv_list,
        default=["plain", "nnn"],
        help="comma-separated registered methods (default: plain,nnn)",
    )
    p.add_argument(
        "--directions",
        type=_csv_list,
        default=None,
        help="a2b and/or b2a (default: both; a2b only for --queries/--gallery data)",
    )
    p.add_argument(
        "--ks",
        type=_int_list,
        default=[1, 5, 10],
        help="cut-offs K of success@K, recall@K and nDCG@K (default 1,5,10)",
    )
    p.add_argument(
        "--metric",
        default="success@1",
        help="validation metric choosing each setting: success@K (old name R@K), MRR, mean_rank or "
        "median_rank (default success@1)",
    )
    p.add_argument(
        "--params",
        type=_params_json,
        metavar="JSON",
        help='a fixed setting instead of the sweep: \'{"k": 16, "alpha": 0.75}\' (for every method) or '
        '\'{"nnn": {"k": 16}}\' (per method); keys must be the method\'s parameters',
    )
    add_normalize_option(p)
    p.add_argument(
        "--allow-overlap",
        action="store_true",
        help="accept validation or reference rows identical to test queries (otherwise an error)",
    )
    p.add_argument("--seed", type=nonnegative_int, default=0, help="bootstrap seed (default 0)")
    p.add_argument(
        "--n-bootstrap", type=positive_int, default=1000, help="bootstrap resamples (default 1000)"
    )
    p.add_argument(
        "--no-positive",
        choices=["exclude", "miss", "error"],
        default="exclude",
        help="queries without a relevant item: leave out and count (default), count as misses, or fail",
    )
    p.add_argument(
        "--studies",
        type=_csv_list,
        default=[],
        help="also run studies (dehub.studies; docs/studies.md): audit,poisoning,drift,fairness,robustness,shift (any subset)",
    )
    p.add_argument(
        "--gallery-bank",
        choices=["natural", "none"],
        default="natural",
        help="gallery bank of DBNorm/DN/InvGC/DBSN: the reference split's gallery side (natural, "
        "default) or none",
    )
    p.add_argument(
        "--best-budget",
        type=float,
        default=None,
        help="best: skip members estimated to take more than this many NNN sweeps (default 3; 0: no budget)",
    )
    p.add_argument(
        "--best-include",
        type=_csv_list,
        default=[],
        help="best: comma-separated members exempt from the budget",
    )
    p.add_argument("-o", "--output", help="report directory (default reports/<benchmark name>/)")
    p.add_argument("--no-plots", action="store_true", help="skip the HTML plots")
    p.add_argument("--quiet", action="store_true", help="no progress output (warnings are still shown)")
    g = p.add_argument_group("Karpathy-split data (COCO / Flickr30k)")
    g.add_argument("--karpathy", help="dataset_coco.json / dataset_flickr30k.json")
    g.add_argument(
        "--image-embeddings", help=".npy or shard directory, one row per image in the JSON's order"
    )
    g.add_argument(
        "--caption-embeddings", help=".npy or shard directory, one row per caption (image by image)"
    )
    g.add_argument("--caption-order", choices=["file", "sentid"], default="file")
    g.add_argument(
        "--reference-fraction",
        type=float,
        default=0.2,
        help="share of train+restval images used as reference (default 0.2, as the paper)",
    )
    f = p.add_argument_group("embedding files (one direction: queries -> gallery)")
    f.add_argument("--queries", help="test query embeddings (.npy or a directory of .npy shards)")
    f.add_argument("--gallery", help="test gallery embeddings (.npy or shard directory)")
    f.add_argument("--pairs", help="test relevance: CSV (query_id,gallery_id) or JSONL")
    f.add_argument(
        "--reference", help="reference query embeddings, .npy or shard directory (disjoint from test)"
    )
    f.add_argument("--val-queries", help="validation query embeddings (.npy or shard directory)")
    f.add_argument("--val-gallery", help="validation gallery embeddings (.npy or shard directory)")
    f.add_argument("--val-pairs", help="validation relevance file")
    f.add_argument("--query-ids", help="ids of the test queries (.npy or one per line); default row numbers")
    f.add_argument("--gallery-ids", help="ids of the test gallery")
    f.add_argument("--val-query-ids", help="ids of the validation queries")
    f.add_argument("--val-gallery-ids", help="ids of the validation gallery")


def _params_json(text: str) -> dict:
    return json_object(text)


def _fixed_params(args: argparse.Namespace, methods: list[str]) -> dict[str, dict] | None:
    """``--params`` as ``{method: {param: value}}``: per method, or one setting for all."""
    if not args.params:
        return None
    given = args.params
    if all(isinstance(v, dict) for v in given.values()) and given:
        unknown = [m for m in given if m not in methods]
        if unknown:
            raise InputError(
                f"--params names methods {unknown} that are not in --methods {','.join(methods)}"
            )
        fixed = {m: dict(v) for m, v in given.items()}
    else:
        # One setting: each parameter goes to the methods that have it (best picks its own).
        fixed = {}
        for m in methods:
            if m == "best":
                continue
            has = set(method_parameters(m))
            mine = {k: v for k, v in given.items() if k in has}
            if mine:
                fixed[m] = mine
        used = {k for v in fixed.values() for k in v}
        unused = [k for k in given if k not in used]
        if unused:
            known = sorted({k for m in methods if m != "best" for k in method_parameters(m)})
            raise InputError(
                f"--params: no method in --methods {','.join(methods)} has the parameter"
                f"{'s' if len(unused) > 1 else ''} {', '.join(map(repr, unused))}; "
                f"their parameters are {', '.join(known) or 'none'}"
            )
        return fixed or None
    for m, values in fixed.items():
        own = method_parameters(m)
        bad = [k for k in values if k not in own]
        if bad:
            raise InputError(
                f"--params: method {m!r} has no parameter {', '.join(map(repr, bad))}; its parameters "
                f"are {', '.join(own) if own else 'none'}"
                + (" (give per-method settings as '{\"nnn\": {...}}')" if len(methods) > 1 else "")
            )
    return fixed


def _load(args: argparse.Namespace):
    given = [a for a in _FILE_ARGS if getattr(args, a)]
    if args.karpathy and given:
        raise InputError("use either --karpathy or the --queries/--gallery/... files, not both")
    if args.karpathy:
        if not (args.image_embeddings and args.caption_embeddings):
            raise InputError("--karpathy needs --image-embeddings and --caption-embeddings")
        bench = loaders.load_karpathy_benchmark(
            args.karpathy,
            args.image_embeddings,
            args.caption_embeddings,
            reference_fraction=args.reference_fraction,
            caption_order=args.caption_order,
            allow_overlap=args.allow_overlap,
        )
        return bench, ["a2b", "b2a"]
    if given:
        missing = [a for a in _FILE_ARGS if not getattr(args, a)]
        if missing:
            raise InputError(
                "embedding-file evaluation needs all of --queries --gallery --pairs --reference "
                "--val-queries --val-gallery --val-pairs; missing: "
                + " ".join("--" + m.replace("_", "-") for m in missing)
            )
        bench = loaders.load_file_benchmark(
            queries=args.queries,
            gallery=args.gallery,
            pairs=args.pairs,
            reference=args.reference,
            val_queries=args.val_queries,
            val_gallery=args.val_gallery,
            val_pairs=args.val_pairs,
            query_ids=args.query_ids,
            gallery_ids=args.gallery_ids,
            val_query_ids=args.val_query_ids,
            val_gallery_ids=args.val_gallery_ids,
            name=Path(args.queries).stem,
            allow_overlap=args.allow_overlap,
        )
        return bench, ["a2b"]
    return load_wordnet_benchmark(), ["a2b", "b2a"]


def _command_line(argv: list[str] | None) -> str:
    """The command that made the report (for its header)."""
    if argv is None:
        prog = Path(sys.argv[0]).name
        if prog not in ("dehub", "__main__.py", "cli.py"):
            return f"dehub eval (called in-process from {prog})"
        argv = sys.argv[1:]
    return "dehub " + " ".join(shlex.quote(a) for a in argv)


def _budget(value: float | None) -> float | None:
    if value is None:
        return DEFAULT_BUDGET
    if value < 0:
        raise InputError(f"--best-budget must be >= 0 (0: no budget); received {value}")
    return None if value == 0 else float(value)


def _run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    unknown = [m for m in args.methods if m not in METHODS and m != "best"]
    if unknown:
        raise InputError(f"unknown --methods {unknown}; expected names from {sorted(METHODS)} or 'best'")
    if not 0 < args.reference_fraction <= 1:
        raise InputError(f"--reference-fraction must be in (0, 1]; received {args.reference_fraction}")
    fixed = _fixed_params(args, args.methods)

    selectable = [f"success@{k}" for k in check_ks(args.ks)] + ["MRR", "mean_rank", "median_rank"]
    if canonical_metric(args.metric) not in selectable:
        raise InputError(
            f"unknown validation metric --metric {args.metric!r}; expected one of {selectable} "
            "(success@K for a K of --ks; R@K is accepted as its old name)"
        )
    slug_out = Path(args.output) if args.output else None
    if slug_out is not None and slug_out.exists() and not slug_out.is_dir():
        raise InputError(f"-o {slug_out} is a file; expected a directory for the report (it is created)")
    studies: Any = getattr(args, "study_runner", None)  # bound by dehub.cli (studies sit beside evaluation)
    if args.studies:
        if studies is None:
            raise InputError(
                "--studies needs the studies package (dehub.studies), which this command was built without"
            )
        studies.check(args.studies)
    bench, directions = _load(args)
    result = run_evaluation(
        bench,
        methods=args.methods,
        params=fixed,
        normalize=args.normalize,
        directions=args.directions or directions,
        ks=args.ks,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
        metric=args.metric,
        no_positive=args.no_positive,
        progress=not args.quiet,
        gallery_banks="natural" if args.gallery_bank == "natural" else None,
        best_budget=_budget(args.best_budget),
        best_include=args.best_include,
    )
    result.data["command"] = _command_line(argv)
    if args.studies and studies is not None:
        t0 = time.perf_counter()
        result.data["studies"] = studies.run(
            bench, args.studies, seed=args.seed, n_bootstrap=args.n_bootstrap, progress=not args.quiet
        )
        result.data["timings"]["studies_seconds"] = time.perf_counter() - t0
        # the total the summary prints covers everything this command ran
        result.data["timings"]["total_seconds"] += result.data["timings"]["studies_seconds"]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", bench.name).strip("-") or "benchmark"
    out_dir = Path(args.output) if args.output else Path("reports") / slug
    paths = write_report(
        result, out_dir, plots=not args.no_plots, sections=studies.sections if studies is not None else None
    )
    print(result.summary_text())
    if args.studies and studies is not None:
        print("\nstudies (headline findings; the report has the tables):")
        for line in studies.sections.headlines(result.data["studies"]):
            print(f"  {line}")
    print(
        f"\nreport: {paths['json']}, {paths['markdown']}, {paths['html']}"
        + ("" if paths["plots"] else " (plots skipped: matplotlib not installed)")
    )
    sys.stdout.flush()
    return 0


#: name -> (help, setup(parser), run(args)); merged by dehub.cli
SUBCOMMANDS = {"eval": (_HELP, _setup, _run)}
