"""The ``dehub`` command line: a thin layer over the library.

Feature packages contribute subcommands as a ``SUBCOMMANDS`` dict
(name -> (help, setup(parser), run(args))) that :func:`subcommands` merges, so each
feature's CLI lives next to it and this module stays small.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["main", "build_parser"]

_EPILOG = """examples:
  dehub build --gallery images.npy --reference train_captions.npy -o coco.dehub --k 16 --alpha 0.75
  dehub search coco.dehub --queries test_captions.npy --top 10 -o results.npz
  dehub add coco.dehub --vectors new_images.npy --ids new_ids.npy --reference train_captions.npy
  dehub remove coco.dehub --ids 17,42
  dehub info coco.dehub --verify
  dehub eval                                   # the bundled WordNet benchmark, report in reports/
  dehub eval --methods plain,nnn,qbnorm,dbnorm --n-bootstrap 2000
  dehub eval --karpathy dataset_coco.json --image-embeddings img.npy --caption-embeddings cap.npy

every subcommand has its own examples: dehub SUBCOMMAND --help
"""

#: Examples shown by each core subcommand's --help (feature subcommands set p.epilog).
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
""",
}

_NORMALIZE_CHOICES = ["warn", "l2", "none", "error"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``dehub build: error: ... (see dehub build --help)``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {cli_words(message)} (see '{self.prog} --help')\n")


#: Python keyword -> command-line flag, for messages the library writes in Python terms.
_FLAG_OF = {
    "normalize": "--normalize",
    "no_positive": "--no-positive",
    "allow_overlap": "--allow-overlap",
    "keep_reference": "--keep-reference",
    "engine": "--engine",
    "engine_params": "--engine-params",
}


def cli_words(message: str) -> str:
    """Rewrite Python spellings in a message as the CLI's: ``normalize='l2'`` -> ``--normalize l2``."""

    def flag(m: re.Match) -> str:
        name, value = m.group(1), m.group(3)
        if value == "True":
            return _FLAG_OF[name]
        return f"{_FLAG_OF[name]} {value}"

    names = "|".join(_FLAG_OF)
    message = re.sub(rf"\b({names})=(['\"]?)([\w.-]+)\2", flag, message)
    message = re.sub(r"`?pip install dehub\[(\w+)\]`?", r"pip install -e '.[\1]' in a dehub clone", message)
    return message


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer ``>= minimum``; errors say what was expected and received."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}; received {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}; received {value}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")
nonnegative_int = _int_at_least(0, "a non-negative integer (0, 1, 2, ...)")


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object; received {text!r} ({exc.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"k\": 16}}'; received {text!r}")
    return value


def _load_npy(path: str, what: str, mmap: bool = True):
    """Embeddings from a .npy file (memory-mapped), a directory of .npy shards, or a
    clip-retrieval / embedding-reader layout, parquet embedding column or fsspec URL."""
    from .datasets.layouts import cli_embeddings
    from .datasets.loaders import load_embeddings

    if (layout := cli_embeddings(path, what)) is not None:
        return layout
    return load_embeddings(path, mmap=mmap, name=what)


def _load_int_ids(path_or_list: str, what: str) -> np.ndarray:
    """Integer ids from a .npy file, a text file (one per line) or a comma-separated list."""
    from .datasets.loaders import read_npy

    p = Path(path_or_list)
    if p.is_file():
        if p.suffix == ".npy":
            raw = np.asarray(read_npy(p, what, mmap=False))
            if raw.ndim != 1:
                raise ValueError(f"{what} file {p} must hold a 1-D array of ids; received shape {raw.shape}")
            if raw.dtype.kind not in "iu":
                raise ValueError(
                    f"{what} file {p} must hold integers; received dtype {raw.dtype}. "
                    "Save them with np.save(path, ids.astype(np.int64))"
                )
            if raw.dtype.kind == "u" and raw.size and int(raw.max()) > np.iinfo(np.int64).max:
                raise ValueError(
                    f"{what} file {p} holds ids above 2**63-1 (max {int(raw.max())}); dehub ids are int64"
                )
            return raw.astype(np.int64)
        tokens = [t.strip() for t in p.read_text(encoding="utf-8").split()]
        source = f"{what} file {p}"
    else:
        if p.suffix in (".npy", ".txt") or "/" in path_or_list:
            raise FileNotFoundError(f"{what} file not found: {p}")
        tokens = [t.strip() for t in path_or_list.split(",")]
        source = what
    bad = [t for t in tokens if not re.fullmatch(r"[+-]?\d+", t)]
    if bad or not tokens:
        raise ValueError(
            f"{source}: expected exact integer ids (e.g. 17,42 or a file with one per line); "
            f"received {bad[:5] if bad else 'nothing'}"
        )
    values = [int(t) for t in tokens]
    info = np.iinfo(np.int64)
    out_of_range = [v for v in values if not info.min <= v <= info.max]
    if out_of_range:
        raise ValueError(f"{source}: ids must fit in int64; received {out_of_range[:5]}")
    return np.array(values, dtype=np.int64)


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
    p.add_argument(
        "--ids", help="gallery ids (n,): .npy of integers or a text file, one per line; default 0..n-1"
    )
    p.add_argument("-o", "--output", required=True, help="index file to write (atomically)")
    p.add_argument("--method", default="nnn", help="correction method, a dehub.METHODS name (default: nnn)")
    p.add_argument(
        "--normalize",
        choices=["warn", "l2", "none", "error"],
        default="warn",
        help="rows that are not unit-norm: warn (default), l2-normalize, accept, or fail",
    )
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
        "--runner",
        choices=["local", "ray"],
        default="local",
        help="local (one process, default) or ray: gallery shards in parallel on a Ray cluster; "
        "-o is then a directory (see docs/distributed.md)",
    )
    from .methods._cli import add_method_param_options

    add_method_param_options(p)  # --k, --alpha, --beta, --lambda, ... of every registered method


def _method_params(args: argparse.Namespace) -> dict:
    """The method parameters given on the command line; options of other methods are errors.

    Which parameters a method has is asked of the method (``methods._cli``, from its
    declared parameters), so a new method or parameter needs no change here.
    """
    from .methods._cli import method_params_from_args

    return method_params_from_args(args, args.method)  # inapplicable options are errors


def _run_build(args: argparse.Namespace) -> int:
    if args.runner == "ray":
        from .distributed.cli import run_build

        return run_build(args)
    from .index import Index

    params = _method_params(args)
    gallery = _load_npy(args.gallery, "gallery")
    reference = _load_npy(args.reference, "reference")
    ids = _load_int_ids(args.ids, "--ids") if args.ids else None
    _check_output_file(args.output)
    from .embed.provenance import build_records

    # a dehub embed folder's encoder, and a folder's metadata columns (url, caption...)
    provenance, items = build_records(args.gallery)
    index = Index.build(
        gallery,
        reference,
        method=args.method,
        ids=ids,
        normalize=args.normalize,
        memory_budget=args.memory_budget_mb * 2**20,
        progress=not args.quiet,
        metadata={"gallery_file": str(args.gallery), "reference_file": str(args.reference), **provenance},
        keep_reference=args.keep_reference,
        **params,
    )
    index.set_item_metadata(items)
    index.save(args.output)
    print(f"wrote {args.output}: {index.n_items} items, d={index.dim}, {index.model!r}")
    return 0


def _check_output_file(path: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"-o {p} is a directory; expected the path of a file to write")
    if not p.parent.exists():
        raise ValueError(f"-o {p}: the directory {p.parent} does not exist")


def _setup_search(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file written by 'dehub build'")
    p.add_argument(
        "--queries", required=True, help=".npy of query embeddings (q, d), or a directory of .npy shards"
    )
    p.add_argument(
        "--query-ids", help="ids of the queries (.npy or one per line) for the output; default row numbers"
    )
    p.add_argument("--top", type=positive_int, default=10, help="results per query (default 10)")
    p.add_argument(
        "-o", "--output", help=".npz to write with arrays 'query_ids', 'scores' and 'ids'; default: print"
    )
    p.add_argument("--alpha", type=float, help="override NNN's alpha for this search")
    p.add_argument("--normalize", choices=_NORMALIZE_CHOICES, default="warn")
    p.add_argument("--mmap", action="store_true", help="memory-map the gallery instead of reading it")
    p.add_argument("--quiet", action="store_true", help="no progress bars (warnings are still shown)")


def _query_ids(args: argparse.Namespace, n: int) -> np.ndarray:
    if not args.query_ids:
        return np.arange(n, dtype=np.int64)
    from .datasets.loaders import load_ids

    ids = load_ids(args.query_ids, n, name="--query-ids")
    try:
        return np.array([int(x) for x in ids], dtype=np.int64)
    except ValueError:
        return np.asarray(ids, dtype=str)


def _run_search(args: argparse.Namespace) -> int:

    index = _load_index(args.index, mmap=args.mmap)
    if args.alpha is not None:
        from .evaluation.protocol import method_parameters

        if "alpha" not in method_parameters(index.model.name):
            raise ValueError(
                f"--alpha does not apply to this index's method {index.model.name!r}; its "
                f"parameters are {method_parameters(index.model.name) or 'none'}"
            )
        index.model.alpha = args.alpha
    queries = _load_npy(args.queries, "queries")
    qids = _query_ids(args, queries.shape[0])
    top = args.top
    if top > index.n_items:
        warnings.warn(
            f"--top {top} exceeds the {index.n_items} items of the index; returning {index.n_items} per query",
            UserWarning,
            stacklevel=2,
        )
        top = index.n_items
    if args.output:
        _check_output_file(args.output)
    scores, ids = index.search(queries, top, normalize=args.normalize, progress=not args.quiet)
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


def _load_index(path: str, *, mmap: bool = False):
    """Load (and verify) an index file: the one place the CLI opens indexes.

    ``Index.load`` checks every array's checksum and the content; when the index module
    grows a dedicated verification function, this is the line that switches to it.
    """
    from .index import Index

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"index file not found: {p}")
    from .distributed import is_manifest_dir

    if p.is_dir() and not is_manifest_dir(p):
        raise ValueError(
            f"{p} is a directory without manifest.json; expected an index file written by "
            "'dehub build' or the output directory of 'dehub build --runner ray'"
        )
    return Index.load(p, mmap=mmap)


def _verify_index(path: str) -> dict:
    """Full checksum + content verification of an index file (:meth:`Index.verify_file`)."""
    from .index import Index

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"index file not found: {p}")
    if p.is_dir():
        raise ValueError(f"{p} is a directory; expected an index file written by 'dehub build'")
    return Index.verify_file(p)


def _safe(value: object) -> str:
    """Header text as printable characters: a hostile header cannot send terminal escapes."""
    text = value if isinstance(value, str) else json.dumps(value)
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _setup_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file")
    p.add_argument("--json", action="store_true", help="print the raw header as JSON")
    p.add_argument(
        "--verify",
        action="store_true",
        help="verify every checksum and the content (reads the whole file)",
    )


def _run_info(args: argparse.Namespace) -> int:
    from .index import Index

    p = Path(args.index)
    if not p.exists():
        raise FileNotFoundError(f"index file not found: {p}")
    header = Index.describe_file(args.index)
    if not isinstance(header, dict):
        raise ValueError(f"{p}: the header is not a JSON object; not a dehub index")
    verified = _verify_index(args.index) if args.verify else None
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
    if verified is not None:
        print(
            f"verified: every checksum and the content are valid ({verified['n_items']} items, d={verified['dim']}, {verified['verified_bytes']} bytes hashed)",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0


def _setup_add(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--normalize", choices=_NORMALIZE_CHOICES, default="warn")
    p.add_argument("--memory-budget-mb", type=positive_int, default=512, help="working memory (MiB)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (warnings are still shown)")
    p.add_argument(
        "--gate",
        choices=["flag", "refuse"],
        help="score the new items against the reference (sentinel) queries first: warn about, or refuse, "
        "items that would be hubs (dehub.studies.audit)",
    )


def _run_add(args: argparse.Namespace) -> int:
    index = _load_index(args.index)
    vectors = _load_npy(args.vectors, "--vectors")
    ids = _load_int_ids(args.ids, "--ids") if args.ids else None
    reference = _load_npy(args.reference, "--reference") if args.reference else None
    out = args.output or args.index
    _check_output_file(out)
    if args.gate:
        from .studies.cli import gate_for_add

        gate_for_add(index, vectors, reference, args.gate, normalize=args.normalize)
    before = index.n_items
    index.add(
        vectors,
        ids,
        reference=reference,
        normalize=args.normalize,
        memory_budget=args.memory_budget_mb * 2**20,
        progress=not args.quiet,
        save_to=out,
    )
    print(f"wrote {out}: added {index.n_items - before} items, {index.n_items} in all")
    return 0


def _setup_remove(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file to update (rewritten atomically unless -o is given)")
    p.add_argument(
        "--ids",
        required=True,
        help="exact integer ids to remove: a comma-separated list (17,42), a .npy file or a text file",
    )
    p.add_argument("-o", "--output", help="write the updated index here instead of in place")


def _run_remove(args: argparse.Namespace) -> int:
    index = _load_index(args.index)
    ids = _load_int_ids(args.ids, "--ids")
    out = args.output or args.index
    _check_output_file(out)
    before = index.n_items
    index.remove(ids, save_to=out)
    print(f"wrote {out}: removed {before - index.n_items} items, {index.n_items} left")
    return 0


#: name -> (help, setup(parser), run(args) -> exit code)
Subcommand = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

_CORE: dict[str, Subcommand] = {
    "build": ("fit a correction on gallery/reference .npy files and save an index", _setup_build, _run_build),
    "search": ("search an index with query embeddings", _setup_search, _run_search),
    "add": ("add gallery items to an index (their biases from the reference set)", _setup_add, _run_add),
    "remove": ("remove gallery items from an index by id", _setup_remove, _run_remove),
    "info": ("show what an index file holds; --verify checks it in full", _setup_info, _run_info),
}


def subcommands() -> dict[str, Subcommand]:
    """The core subcommands plus those that live with their feature modules."""
    cmds = dict(_CORE)
    try:
        from .evaluation.cli import SUBCOMMANDS as evaluation_cmds
    except ImportError:  # the evaluation package not present (yet)
        evaluation_cmds = {}
    cmds.update(evaluation_cmds)
    from .embed.cli import SUBCOMMANDS as embed_cmds
    from .export.cli import SUBCOMMANDS as export_cmds
    from .serve.cli import SUBCOMMANDS as serve_cmds

    cmds.update(embed_cmds)
    cmds.update(export_cmds)
    cmds.update(serve_cmds)
    from .studies.cli import SUBCOMMANDS as studies_cmds

    cmds.update(studies_cmds)
    return cmds


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="dehub",
        description="Training-free hubness correction (Nearest Neighbor Normalization and family).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dehub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (help_, setup, run) in subcommands().items():
        p = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=_EXAMPLES.get(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        setup(p)  # a feature's setup may set p.epilog to its own examples
        p.set_defaults(_run=run)
    return parser


def _os_error_text(exc: OSError) -> str:
    """One readable line for an OS error: what, which file, and what to do."""
    name = exc.filename if exc.filename is not None else ""
    if exc.errno == errno.EISDIR:
        return f"{name} is a directory; expected a file path"
    if exc.errno == errno.EEXIST:
        return f"{name} already exists and is not a directory; choose another -o path or remove it"
    if exc.errno == errno.ENOENT:
        return f"no such file or directory: {name}" if name else (exc.strerror or str(exc))
    if exc.errno == errno.EACCES:
        return f"permission denied: {name}"
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device while writing {name}"
    if exc.errno == errno.ENOTDIR:
        return f"a parent of {name} is a file, not a directory"
    if exc.strerror and not exc.args[1:]:
        return str(exc)
    return f"{exc.strerror or exc}{': ' + str(name) if name else ''}"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, in the CLI's words (never hidden by --quiet)."""
    print(f"dehub: warning: {cli_words(str(message))}", file=sys.stderr, flush=True)


def _quiet_pipe() -> None:
    """stdout's reader went away (``dehub search ... | head``): stop writing, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - no real stdout
        pass


def main(argv: list[str] | None = None) -> int:
    from ._format import IndexFormatError

    args = build_parser().parse_args(argv)
    old_show = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            code = int(args._run(args) or 0)
            sys.stdout.flush()
            return code
    except BrokenPipeError:
        _quiet_pipe()
        return 0
    except KeyboardInterrupt:
        print("dehub: interrupted", file=sys.stderr)
        return 130
    except ImportError as exc:
        print(f"dehub: error: {cli_words(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"dehub: error: {cli_words(_os_error_text(exc))}", file=sys.stderr)
        return 2
    except KeyError as exc:  # e.g. remove() of unknown ids: the message is the argument
        msg = exc.args[0] if exc.args else str(exc)
        print(f"dehub: error: {cli_words(str(msg))}", file=sys.stderr)
        return 2
    except (IndexFormatError, ValueError, TypeError, EOFError, OverflowError, MemoryError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"dehub: error: {cli_words(text)}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        # A "dehub: ..." message about a bad input file: the same exit code as any
        # other usage error, and main() returns instead of exiting the caller.
        print(exc.code, file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = old_show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
