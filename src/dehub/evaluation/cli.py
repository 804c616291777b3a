"""``dehub eval``: run the evaluation protocol and write a report.

With no data arguments it evaluates the bundled WordNet reverse-dictionary benchmark.
User data: either ``--karpathy`` (COCO/Flickr30k split JSON) with ``--image-embeddings``
and ``--caption-embeddings``, or ``--queries/--gallery/--pairs/--reference`` plus
``--val-queries/--val-gallery/--val-pairs`` (one direction, queries -> gallery).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

__all__ = ["SUBCOMMANDS"]

_HELP = "run the evaluation protocol (validation sweep, test metrics with CIs, hubness) and write a report"

_FILE_ARGS = ("queries", "gallery", "pairs", "reference", "val_queries", "val_gallery", "val_pairs")


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
    p.add_argument("--ks", type=_int_list, default=[1, 5, 10], help="Recall cut-offs (default 1,5,10)")
    p.add_argument("--metric", default="R@1", help="validation metric choosing each setting (default R@1)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument(
        "--no-positive",
        choices=["exclude", "miss", "error"],
        default="exclude",
        help="queries without a relevant item: leave out and count (default), count as misses, or fail",
    )
    p.add_argument("-o", "--output", help="report directory (default reports/<benchmark name>/)")
    p.add_argument("--no-plots", action="store_true", help="skip the HTML plots")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    g = p.add_argument_group("Karpathy-split data (COCO / Flickr30k)")
    g.add_argument("--karpathy", help="dataset_coco.json / dataset_flickr30k.json")
    g.add_argument("--image-embeddings", help=".npy, one row per image in the JSON's order")
    g.add_argument("--caption-embeddings", help=".npy, one row per caption (image by image)")
    g.add_argument("--caption-order", choices=["file", "sentid"], default="file")
    g.add_argument(
        "--reference-fraction",
        type=float,
        default=0.2,
        help="share of train+restval images used as reference (default 0.2, as the paper)",
    )
    f = p.add_argument_group("embedding files (one direction: queries -> gallery)")
    f.add_argument("--queries", help="test query embeddings .npy")
    f.add_argument("--gallery", help="test gallery embeddings .npy")
    f.add_argument("--pairs", help="test relevance: CSV (query_id,gallery_id) or JSONL")
    f.add_argument("--reference", help="reference query embeddings .npy (disjoint from test)")
    f.add_argument("--val-queries", help="validation query embeddings .npy")
    f.add_argument("--val-gallery", help="validation gallery embeddings .npy")
    f.add_argument("--val-pairs", help="validation relevance file")
    f.add_argument("--query-ids", help="ids of the test queries (.npy or one per line); default row numbers")
    f.add_argument("--gallery-ids", help="ids of the test gallery")
    f.add_argument("--val-query-ids", help="ids of the validation queries")
    f.add_argument("--val-gallery-ids", help="ids of the validation gallery")


def _load(args: argparse.Namespace):
    from ..datasets import loaders

    given = [a for a in _FILE_ARGS if getattr(args, a)]
    if args.karpathy and given:
        raise ValueError("use either --karpathy or the --queries/--gallery/... files, not both")
    if args.karpathy:
        if not (args.image_embeddings and args.caption_embeddings):
            raise ValueError("--karpathy needs --image-embeddings and --caption-embeddings")
        bench = loaders.load_karpathy_benchmark(
            args.karpathy,
            args.image_embeddings,
            args.caption_embeddings,
            reference_fraction=args.reference_fraction,
            caption_order=args.caption_order,
        )
        return bench, ["a2b", "b2a"]
    if given:
        missing = [a for a in _FILE_ARGS if not getattr(args, a)]
        if missing:
            raise ValueError(
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
        )
        return bench, ["a2b"]
    from ..datasets.wordnet import load_wordnet_benchmark

    return load_wordnet_benchmark(), ["a2b", "b2a"]


def _run(args: argparse.Namespace) -> int:
    from .protocol import run_evaluation
    from .report import write_report

    bench, directions = _load(args)
    result = run_evaluation(
        bench,
        methods=args.methods,
        directions=args.directions or directions,
        ks=args.ks,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
        metric=args.metric,
        no_positive=args.no_positive,
        progress=not args.quiet,
    )
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", bench.name).strip("-") or "benchmark"
    out_dir = Path(args.output) if args.output else Path("reports") / slug
    paths = write_report(result, out_dir, plots=not args.no_plots)
    print(result.summary_text())
    print(
        f"\nreport: {paths['json']}, {paths['markdown']}, {paths['html']}"
        + ("" if paths["plots"] else " (plots skipped: matplotlib not installed)")
    )
    sys.stdout.flush()
    return 0


#: name -> (help, setup(parser), run(args)); merged by dehub.cli
SUBCOMMANDS = {"eval": (_HELP, _setup, _run)}
