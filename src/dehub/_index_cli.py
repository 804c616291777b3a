"""The index subcommands of ``dehub``: ``build``, ``search``, ``add``, ``remove``, ``info``.

Each is ``(help, setup(parser), run(args) -> exit code)`` in :data:`SUBCOMMANDS`, merged by
:func:`dehub.cli.subcommands` like the feature packages' own ``SUBCOMMANDS``. Inputs are
loaded and checked once by :mod:`dehub._cli_support`; an index file or a distributed run
directory is opened through :func:`dehub.load`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ._cli_support import (
    NORMALIZE_CHOICES,
    add_normalize_option,
    bank_methods,
    gallery_bank_note,
    json_object,
    load_int_ids,
    load_npy,
    method_params,
    positive_int,
)
from ._errors import InputError
from ._loading import describe, load, verify
from .datasets.pairs import load_ids
from .distributed.cli import run_build
from .embed.provenance import build_records
from .engine.tuning import describe_auto, tuning_report
from .index import Index
from .methods._cli import add_method_param_options
from .studies.cli import gate_for_add

__all__ = ["SUBCOMMANDS", "Subcommand"]

#: name -> (help, setup(parser), run(args) -> exit code)
Subcommand = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

#: Examples shown by each subcommand's --help (its setup sets ``p.epilog``).
_EXAMPLES = {
    "build": """examples:
  dehub build --gallery images.npy --reference train_captions.npy -o coco.dehub
  dehub build --gallery images.npy --reference train_captions.npy -o coco.dehub --k 16 --alpha 0.75
  dehub build --gallery img_emb/ --reference text_emb/ -o laion.dehub --engine ivf   # shard directories
  dehub build --gallery g.npy --reference r.npy -o g.dehub --method qbnorm --beta 20
  dehub build --gallery g.npy --reference r.npy -o g.dehub --normalize l2 --keep-reference
""",
    "search": """examples:
  dehub search coco.dehub --queries test_captions.npy --top 10              # print id:score
  dehub search coco.dehub --queries test_captions.npy --top 10 -o results.npz
  dehub search coco.dehub --queries q.npy --query-ids q_ids.txt --top 5 | head
  dehub search coco.dehub --queries q.npy --alpha 0.5 --mmap
""",
    "info": """examples:
  dehub info coco.dehub
  dehub info coco.dehub --verify        # full checksum and content verification
  dehub info coco.dehub --json
""",
    "add": """examples:
  dehub add coco.dehub --vectors new_images.npy --reference train_captions.npy
  dehub add coco.dehub --vectors new.npy --ids new_ids.npy      # index built with --keep-reference
  dehub add coco.dehub --vectors new.npy --reference r.npy -o coco-v2.dehub
""",
    "remove": """examples:
  dehub remove coco.dehub --ids 17,42,99
  dehub remove coco.dehub --ids stale_ids.npy -o coco-v2.dehub
  dehub remove coco.dehub --ids stale_ids.txt                  # one integer id per line
  dehub remove coco.dehub --ids @stale                         # @FILE: any file name
""",
}


def _setup_build(p: argparse.ArgumentParser) -> None:
    p.epilog = _EXAMPLES["build"]
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
    p.add_argument(
        "--ids", help="gallery ids (n,): .npy of integers or a text file, one per line; default 0..n-1"
    )
    p.add_argument("-o", "--output", required=True, help="index file to write (atomically)")
    p.add_argument("--method", default="nnn", help="correction method, a dehub.METHODS name (default: nnn)")
    add_normalize_option(p)
    p.add_argument(
        "--memory-budget-mb", type=positive_int, default=512, help="working memory for the engine (MiB)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars (warnings are still shown)")
    p.add_argument(
        "--engine",
        choices=["exact", "ivf", "ivf-sq8", "hnsw", "auto"],
        help="NNN: top-k engine for the bias (default exact; see docs/scale.md)",
    )
    p.add_argument(
        "--engine-params",
        type=json_object,
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
    p.add_argument(
        "--gallery-bank",
        metavar="FILE",
        help=".npy (or directory of .npy shards) of gallery-modality bank embeddings, e.g. the gallery "
        f"side of the reference split, for the methods that take one ({', '.join(bank_methods())}); "
        "without it they fit their no-bank form and say so",
    )
    p.add_argument(
        "--runner",
        choices=["local", "ray"],
        default="local",
        help="local (one process, default) or ray: gallery shards in parallel on a Ray cluster; "
        "-o is then a directory (see docs/distributed.md)",
    )
    add_method_param_options(p)  # --k, --alpha, --beta, --lambda, ... of every registered method


def _run_build(args: argparse.Namespace) -> int:
    if args.runner == "ray":
        return run_build(args)
    params = method_params(args)
    gallery = load_npy(args.gallery, "gallery")
    reference = load_npy(args.reference, "reference")
    bank = load_npy(args.gallery_bank, "gallery bank") if args.gallery_bank else None
    ids = load_int_ids(args.ids, "--ids") if args.ids else None
    _check_output_file(args.output)
    bank_meta = gallery_bank_note(args.method, args.gallery_bank, bank, params)
    # a dehub embed folder's encoder, and a folder's metadata columns (url, caption...)
    provenance, items = build_records(args.gallery)
    # one read validates the gallery and writes it into the (temporary) index file, one
    # feeds the fit; the file is completed and renamed only if the fit succeeds
    index = Index.build_to_file(
        args.output,
        gallery,
        reference,
        item_metadata=items,
        method=args.method,
        ids=ids,
        normalize=args.normalize,
        memory_budget=args.memory_budget_mb * 2**20,
        progress=not args.quiet,
        metadata={
            "gallery_file": str(args.gallery),
            "reference_file": str(args.reference),
            **bank_meta,
            **provenance,
        },
        keep_reference=args.keep_reference,
        gallery_bank=bank,
        **params,
    )
    print(f"wrote {args.output}: {index.n_items} items, d={index.dim}, {index.model!r}")
    return 0


def _check_output_file(path: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise InputError(f"-o {p} is a directory; expected the path of a file to write")
    if not p.parent.exists():
        raise InputError(f"-o {p}: the directory {p.parent} does not exist")


def _setup_search(p: argparse.ArgumentParser) -> None:
    p.epilog = _EXAMPLES["search"]
    p.add_argument("index", help="index file written by 'dehub build'")
    p.add_argument(
        "--queries", required=True, help=".npy of query embeddings (q, d), or a directory of .npy shards"
    )
    p.add_argument(
        "--query-ids", help="ids of the queries (.npy or one per line) for the output; default row numbers"
    )
    # dest k: the library's k, so its KClampedWarning names --top (the one clamp: Index.search's)
    p.add_argument(
        "--top", dest="k", metavar="TOP", type=positive_int, default=10, help="results per query (default 10)"
    )
    p.add_argument(
        "-o", "--output", help=".npz to write with arrays 'query_ids', 'scores' and 'ids'; default: print"
    )
    p.add_argument("--alpha", type=float, help="override NNN's alpha for this search")
    p.add_argument("--normalize", choices=NORMALIZE_CHOICES, default="warn")
    p.add_argument("--mmap", action="store_true", help="memory-map the gallery instead of reading it")
    p.add_argument("--quiet", action="store_true", help="no progress bars (warnings are still shown)")


def _query_ids(args: argparse.Namespace, n: int) -> np.ndarray:
    if not args.query_ids:
        return np.arange(n, dtype=np.int64)
    ids = load_ids(args.query_ids, n, name="--query-ids")
    try:
        return np.array([int(x) for x in ids], dtype=np.int64)
    except ValueError:
        return np.asarray(ids, dtype=str)


def _run_search(args: argparse.Namespace) -> int:
    index = load(args.index, mmap=args.mmap)
    if args.alpha is not None:
        index = index.with_params(alpha=args.alpha)
    queries = load_npy(args.queries, "queries")
    qids = _query_ids(args, queries.shape[0])
    if args.output:
        _check_output_file(args.output)
    scores, ids = index.search(queries, args.k, normalize=args.normalize, progress=not args.quiet)
    if args.output:
        out = Path(args.output)
        with open(out, "wb") as f:
            np.savez(f, query_ids=qids, scores=scores, ids=ids)
        print(f"wrote {out}: query_ids, and scores and ids of shape {ids.shape}")
    else:
        for qi in range(ids.shape[0]):
            row = " ".join(f"{i}:{s:.4f}" for i, s in zip(ids[qi], scores[qi]) if i >= 0)
            print(f"{qids[qi]}\t{row}")
    return 0


def _auto_lines(header: dict) -> list[str]:
    """What precision="auto" chose on this machine for the index's shapes: its searches
    (database: the gallery) and its fit (database: the reference), by dimension."""
    gallery = next(
        (a for a in header.get("arrays", []) if isinstance(a, dict) and a.get("name") == "gallery"), {}
    )
    shape = gallery.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and all(type(v) is int and v > 0 for v in shape)):
        return []
    sizes = tuple(n for n in (shape[0], header.get("n_reference")) if type(n) is int and n > 0)
    params = header.get("params")
    own = params.get("precision") if isinstance(params, dict) else None
    lines = describe_auto(tuning_report(), d=shape[1], n_database=sizes)
    return [f"this index: precision={_safe(own)}", *lines] if own is not None else lines


def _safe(value: object) -> str:
    """Header text as printable characters: a hostile header cannot send terminal escapes."""
    text = value if isinstance(value, str) else json.dumps(value)
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _setup_info(p: argparse.ArgumentParser) -> None:
    p.epilog = _EXAMPLES["info"]
    p.add_argument("index", help="index file")
    p.add_argument("--json", action="store_true", help="print the raw header as JSON")
    p.add_argument(
        "--verify",
        action="store_true",
        help="verify every checksum and the content (reads the whole file)",
    )


def _run_info(args: argparse.Namespace) -> int:
    header = describe(args.index)
    if not isinstance(header, dict):
        raise InputError(f"{args.index}: the header is not a JSON object; not a dehub index")
    verified = verify(args.index) if args.verify else None
    if args.json:
        print(json.dumps(header, indent=2, sort_keys=True))
    else:
        print(f"file:     {args.index}")
        print(
            f"format:   version {_safe(header.get('format_version', 'missing'))}, "
            f"written by {_safe(header.get('created_by'))}"
        )
        print(f"method:   {_safe(header.get('method'))} {_safe(header.get('params', {}))}")
        for a in header.get("arrays", []):
            print(
                f"array:    {_safe(a.get('name', '?')):<20} {_safe(a.get('dtype', '?')):>4} "
                f"{_safe(str(tuple(a.get('shape', ()))))}"
            )
        if header.get("metadata"):
            print(f"metadata: {_safe(header['metadata'])}")
        for line in _auto_lines(header):
            print(f"engine:   {line}")
    if verified is not None:
        print(
            f"verified: every checksum and the content are valid ({verified['n_items']} items, "
            f"d={verified['dim']}"
            + (f", {verified['verified_bytes']} bytes hashed)" if "verified_bytes" in verified else ")"),
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0


def _setup_add(p: argparse.ArgumentParser) -> None:
    p.epilog = _EXAMPLES["add"]
    p.add_argument("index", help="index file to update (rewritten atomically unless -o is given)")
    p.add_argument(
        "--vectors", required=True, help=".npy of the new gallery embeddings (n, d), or a shard directory"
    )
    p.add_argument("--ids", help="ids of the new items (.npy ints or one per line); default max id + 1, ...")
    p.add_argument(
        "--reference",
        help="the reference set the index was built with (not needed if it was built with --keep-reference)",
    )
    p.add_argument("-o", "--output", help="write the updated index here instead of in place")
    p.add_argument("--normalize", choices=NORMALIZE_CHOICES, default="warn")
    p.add_argument("--memory-budget-mb", type=positive_int, default=512, help="working memory (MiB)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (warnings are still shown)")
    p.add_argument(
        "--gate",
        choices=["flag", "refuse"],
        help="score the new items against the reference (sentinel) queries first: warn about, or refuse, "
        "items that would be hubs (dehub.studies.audit)",
    )


def _run_add(args: argparse.Namespace) -> int:
    index = load(args.index)
    vectors = load_npy(args.vectors, "--vectors")
    ids = load_int_ids(args.ids, "--ids") if args.ids else None
    reference = load_npy(args.reference, "--reference") if args.reference else None
    out = args.output or args.index
    _check_output_file(out)
    before = index.n_items
    index.add(
        vectors,
        ids,
        reference=reference,
        normalize=args.normalize,
        memory_budget=args.memory_budget_mb * 2**20,
        progress=not args.quiet,
        save_to=out,
        # the gate sees the rows as validated (and normalized) by add, before any change
        admit=(lambda rows, sentinels: gate_for_add(index, rows, sentinels, args.gate))
        if args.gate
        else None,
    )
    print(f"wrote {out}: added {index.n_items - before} items, {index.n_items} in all")
    return 0


def _setup_remove(p: argparse.ArgumentParser) -> None:
    p.epilog = _EXAMPLES["remove"]
    p.add_argument("index", help="index file to update (rewritten atomically unless -o is given)")
    p.add_argument(
        "--ids",
        required=True,
        help="exact integer ids to remove: a comma-separated list of any length (17,42,...), @FILE "
        "(a text file, one id per line, or a .npy), or a path ending in .npy/.txt",
    )
    p.add_argument("-o", "--output", help="write the updated index here instead of in place")


def _run_remove(args: argparse.Namespace) -> int:
    index = load(args.index)
    ids = load_int_ids(args.ids, "--ids")
    out = args.output or args.index
    _check_output_file(out)
    before = index.n_items
    index.remove(ids, save_to=out)
    print(f"wrote {out}: removed {before - index.n_items} items, {index.n_items} left")
    return 0


SUBCOMMANDS: dict[str, Subcommand] = {
    "build": ("fit a correction on gallery/reference .npy files and save an index", _setup_build, _run_build),
    "search": ("search an index with query embeddings", _setup_search, _run_search),
    "add": ("add gallery items to an index (their biases from the reference set)", _setup_add, _run_add),
    "remove": ("remove gallery items from an index by id", _setup_remove, _run_remove),
    "info": ("show what an index file holds; --verify checks it in full", _setup_info, _run_info),
}
