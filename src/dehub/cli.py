"""The ``dehub`` command line: a thin layer over the library.

Feature packages contribute subcommands as a ``SUBCOMMANDS`` dict
(name -> (help, setup(parser), run(args))) that :func:`subcommands` merges, so each
feature's CLI lives next to it and this module stays small.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["main", "build_parser"]

_EPILOG = """examples:
  dehub build --gallery images.npy --reference train_captions.npy -o coco.dehub --k 16 --alpha 0.75
  dehub search coco.dehub --queries test_captions.npy --top 10 -o results.npz
  dehub info coco.dehub
  dehub eval                                   # the bundled WordNet benchmark, report in reports/
  dehub eval --methods plain,nnn,qbnorm,dbnorm --n-bootstrap 2000
  dehub eval --karpathy dataset_coco.json --image-embeddings img.npy --caption-embeddings cap.npy
"""


def _load_npy(path: str, what: str, mmap: bool = True) -> np.ndarray:
    p = Path(path)
    if not p.exists():
        raise SystemExit(f"dehub: {what} file not found: {p}")
    if p.is_dir():  # clip-retrieval layout: DIR/img_emb_0.npy, img_emb_1.npy, ...
        from .datasets.shards import ShardedArray

        try:
            return ShardedArray(p)
        except (FileNotFoundError, ValueError) as exc:
            raise SystemExit(f"dehub: {what} directory {p}: {exc}") from None
    try:
        arr = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise SystemExit(f"dehub: {what} file {p} is not a plain numeric .npy array: {exc}") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        raise SystemExit(
            f"dehub: {what} file {p} is an .npz archive; expected a single .npy array (save it with np.save)"
        )
    return arr


def _setup_build(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gallery",
        required=True,
        help=".npy of gallery embeddings (n, d), memory-mapped, or a directory of .npy shards",
    )
    p.add_argument(
        "--reference",
        required=True,
        help=".npy of reference queries (m, d), e.g. training captions, or a directory of .npy shards",
    )
    p.add_argument("--ids", help=".npy of int gallery ids (n,); default 0..n-1")
    p.add_argument("-o", "--output", required=True, help="index file to write (atomically)")
    p.add_argument("--method", default="nnn", help="correction method, a dehub.METHODS name (default: nnn)")
    p.add_argument(
        "--normalize",
        choices=["warn", "l2", "none", "error"],
        default="warn",
        help="rows that are not unit-norm: warn (default), l2-normalize, accept, or fail",
    )
    p.add_argument("--memory-budget-mb", type=int, default=512, help="working memory for the engine (MiB)")
    p.add_argument(
        "--engine",
        choices=["exact", "ivf", "ivf-sq8", "hnsw", "auto"],
        help="NNN: top-k engine for the bias (default exact; see docs/scale.md)",
    )
    p.add_argument(
        "--engine-params",
        type=json.loads,
        metavar="JSON",
        help='NNN: approximate engine knobs, e.g. \'{"nprobe": 16, "rerank": 64}\'',
    )
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "auto"],
        help="NNN: exact engine precision; bf16 = bf16 pass + exact re-score, same results (docs/precision.md)",
    )
    p.add_argument(
        "--keep-reference",
        action="store_true",
        help="store the reference set in the index so 'add' needs no reference",
    )
    from .methods._cli import add_method_param_options

    add_method_param_options(p)  # --k, --alpha, --beta, --lambda, ... of every registered method


def _method_params(args: argparse.Namespace) -> dict:
    from .methods._cli import method_params_from_args

    return method_params_from_args(args, args.method)  # inapplicable options are errors


def _run_build(args: argparse.Namespace) -> int:
    from .index import Index

    gallery = _load_npy(args.gallery, "gallery")
    reference = _load_npy(args.reference, "reference")
    ids = _load_npy(args.ids, "ids", mmap=False) if args.ids else None
    index = Index.build(
        gallery,
        reference,
        method=args.method,
        ids=ids,
        normalize=args.normalize,
        memory_budget=args.memory_budget_mb * 2**20,
        progress=True,
        metadata={"gallery_file": str(args.gallery), "reference_file": str(args.reference)},
        keep_reference=args.keep_reference,
        **_method_params(args),
    )
    index.save(args.output)
    print(f"wrote {args.output}: {index.n_items} items, d={index.dim}, {index.model!r}")
    return 0


def _setup_search(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file written by 'dehub build'")
    p.add_argument("--queries", required=True, help=".npy of query embeddings (q, d)")
    p.add_argument("--top", type=int, default=10, help="results per query (default 10)")
    p.add_argument("-o", "--output", help=".npz to write with arrays 'scores' and 'ids'; default: print")
    p.add_argument("--alpha", type=float, help="override NNN's alpha for this search")
    p.add_argument("--normalize", choices=["warn", "l2", "none", "error"], default="warn")
    p.add_argument("--mmap", action="store_true", help="memory-map the gallery instead of reading it")


def _run_search(args: argparse.Namespace) -> int:
    from .index import Index

    index = Index.load(args.index, mmap=args.mmap)
    if args.alpha is not None:
        if "alpha" not in index.model.get_params():
            raise SystemExit(f"dehub: method {index.model.name!r} has no alpha parameter")
        index.model.alpha = args.alpha
    queries = _load_npy(args.queries, "queries")
    scores, ids = index.search(queries, args.top, normalize=args.normalize, progress=True)
    if args.output:
        out = Path(args.output)
        with open(out, "wb") as f:
            np.savez(f, scores=scores, ids=ids)
        print(f"wrote {out}: scores and ids of shape {ids.shape}")
    else:
        for qi in range(ids.shape[0]):
            row = " ".join(f"{i}:{s:.4f}" for i, s in zip(ids[qi], scores[qi]) if i >= 0)
            print(f"{qi}\t{row}")
    return 0


def _setup_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file")
    p.add_argument("--json", action="store_true", help="print the raw header as JSON")


def _run_info(args: argparse.Namespace) -> int:
    from .index import Index

    header = Index.describe_file(args.index)
    if args.json:
        print(json.dumps(header, indent=2, sort_keys=True))
        return 0
    print(f"file:     {args.index}")
    print(f"format:   version {header['format_version']}, written by {header.get('created_by')}")
    print(f"method:   {header.get('method')} {json.dumps(header.get('params', {}))}")
    for a in header["arrays"]:
        print(f"array:    {a['name']:<20} {a['dtype']:>4} {tuple(a['shape'])}")
    if header.get("metadata"):
        print(f"metadata: {json.dumps(header['metadata'])}")
    return 0


#: name -> (help, setup(parser), run(args) -> exit code)
Subcommand = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

_CORE: dict[str, Subcommand] = {
    "build": ("fit a correction on gallery/reference .npy files and save an index", _setup_build, _run_build),
    "search": ("search an index with query embeddings", _setup_search, _run_search),
    "info": ("show what an index file holds", _setup_info, _run_info),
}


def subcommands() -> dict[str, Subcommand]:
    """The core subcommands plus those that live with their feature modules."""
    cmds = dict(_CORE)
    try:
        from .evaluation.cli import SUBCOMMANDS as evaluation_cmds
    except ImportError:  # the evaluation package not present (yet)
        evaluation_cmds = {}
    cmds.update(evaluation_cmds)
    return cmds


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="dehub",
        description="Training-free hubness correction (Nearest Neighbor Normalization and family).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dehub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_, setup, run) in subcommands().items():
        p = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        setup(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ._format import IndexFormatError

    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (IndexFormatError, ValueError, TypeError, EOFError, OSError) as exc:
        print(f"dehub: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        # A "dehub: ..." message about a bad input file: the same exit code as any
        # other usage error, and main() returns instead of exiting the caller.
        print(exc.code, file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
