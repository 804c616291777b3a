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
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ._cli_support import (
    NORMALIZE_CHOICES,
    bank_methods,
    gallery_bank_note,
    json_object,
    load_int_ids,
    load_npy,
    method_params,
    positive_int,
)
from ._errors import InputError, InputWarning, Surface, UserError
from ._extras import OPTIONAL_PACKAGES
from ._loading import describe, load, verify
from ._version import __version__
from .datasets.pairs import load_ids
from .distributed.cli import run_build
from .embed.cli import SUBCOMMANDS as embed_cmds
from .embed.provenance import build_records
from .evaluation.cli import SUBCOMMANDS as evaluation_cmds
from .export.cli import SUBCOMMANDS as export_cmds
from .index import Index
from .methods._cli import add_method_param_options, option_name
from .serve.cli import SUBCOMMANDS as serve_cmds
from .studies.cli import STUDY_RUNNER, gate_for_add
from .studies.cli import SUBCOMMANDS as studies_cmds

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
  dehub remove coco.dehub --ids @stale                         # @FILE: any file name
""",
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``dehub build: error: ... (see dehub build --help)``.

    It also records each option's flag by destination (``flags``), so a structured library
    error (:class:`dehub._errors.InputError`) names the flag of the running command.
    """

    def __init__(self, *args, **kwargs) -> None:
        self.flags: dict[str, str] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        if action.option_strings:
            self.flags[action.dest] = max(action.option_strings, key=len)
        return action

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


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
    if verified is not None:
        print(
            f"verified: every checksum and the content are valid ({verified['n_items']} items, "
            f"d={verified['dim']}"
            + (f", {verified['verified_bytes']} bytes hashed)" if "verified_bytes" in verified else ")"),
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
    for feature in (evaluation_cmds, embed_cmds, export_cmds, serve_cmds, studies_cmds):
        cmds.update(feature)
    return cmds


def build_parser() -> argparse.ArgumentParser:
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
        p.set_defaults(_run=run, _flags=p.flags)
        if name == "eval":  # the composition root binds the studies into `dehub eval --studies`
            p.set_defaults(study_runner=STUDY_RUNNER)
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


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _warning_printer(surface: Surface):
    """Warnings as one line each, fixes in the CLI's words (never hidden by --quiet)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = message.render(surface) if isinstance(message, InputWarning) else str(message)
        print(f"dehub: warning: {_one_line(text)}", file=sys.stderr, flush=True)

    return show


def _quiet_pipe() -> None:
    """stdout's reader went away (``dehub search ... | head``): stop writing, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - no real stdout
        pass


#: exit status of an internal error (BSD sysexits EX_SOFTWARE)
EXIT_BUG = 70


def _missing_optional_package(exc: ImportError) -> bool:
    """Whether ``exc`` (or the error it was raised from) is an optional extra that is not
    installed: the user's environment. Any other ImportError is a bug in dehub."""
    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        name = getattr(seen, "name", None)
        if isinstance(seen, ImportError) and name and name.split(".", 1)[0] in OPTIONAL_PACKAGES:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _report_bug(exc: BaseException) -> int:
    """An internal error: the traceback, then one line saying it is dehub's bug, to report."""
    traceback.print_exception(exc, file=sys.stderr)
    print(
        f"dehub: internal error ({type(exc).__name__}): this is a bug in dehub, not a problem with "
        f"your input. Please report it with the command line and the traceback above "
        f"(dehub {__version__}, Python {sys.version.split()[0]}).",
        file=sys.stderr,
    )
    return EXIT_BUG


def _cli_surface(flags: dict[str, str]) -> Surface:
    """How the command line spells a fix: a parameter by its flag (``--reference FILE``,
    ``--normalize l2``), not ``reference=...``; an extra installed from a dehub clone."""

    def param(name: str, value) -> str:
        flag = flags.get(name) or option_name(name)
        if value is None:
            return f"{flag} {name.rstrip('_').upper()}"
        if value == "True":
            return flag
        values = value if isinstance(value, tuple) else (value,)
        words = [v.strip("'\"") for v in values]
        return f"{flag} " + (words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1])

    def install(extra: str) -> str:
        return f"pip install -e '.[{extra}]' in a dehub clone (dehub is not on PyPI)"

    return Surface(param=param, install=install, command=lambda c: c.cli)


def main(argv: list[str] | None = None) -> int:
    """Run the command; user mistakes are one line (exit 2), bugs a traceback (exit 70)."""
    args = build_parser().parse_args(argv)
    surface = _cli_surface(getattr(args, "_flags", {}))
    old_show = warnings.showwarning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _warning_printer(surface)
            code = int(args._run(args) or 0)
            sys.stdout.flush()
            return code
    except BrokenPipeError:
        _quiet_pipe()
        return 0
    except KeyboardInterrupt:
        print("dehub: interrupted", file=sys.stderr)
        return 130
    except UserError as exc:  # structured: rendered with this command's own flags
        print(f"dehub: error: {_one_line(exc.render(surface))}", file=sys.stderr)
        return 2
    except ImportError as exc:
        if not _missing_optional_package(exc):
            return _report_bug(exc)
        print(f"dehub: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"dehub: error: {_os_error_text(exc)}", file=sys.stderr)
        return 2
    except MemoryError as exc:
        print(
            f"dehub: error: not enough memory ({exc or 'an allocation failed'}); "
            "use a smaller input (or a lower --memory-budget-mb where the command has one)",
            file=sys.stderr,
        )
        return 1
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        # A "dehub: ..." message about a bad input file: the same exit code as any
        # other usage error, and main() returns instead of exiting the caller.
        print(exc.code, file=sys.stderr)
        return 2
    except Exception as exc:  # anything else (a bare ValueError too) is a bug in dehub
        return _report_bug(exc)
    finally:
        warnings.showwarning = old_show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
