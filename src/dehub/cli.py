"""The ``dehub`` command line: a thin layer over the library.

Feature packages contribute subcommands as a ``SUBCOMMANDS`` dict
(name -> (help, setup(parser), run(args))) that :func:`subcommands` merges, so each
feature's CLI lives next to it and this module stays small.

The index subcommands live in :mod:`dehub._index_cli`, the error reporting in
:mod:`dehub._cli_errors`; this module assembles the parser and runs a command.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ._cli_errors import (
    EXIT_BUG,
    cli_surface,
    missing_optional_package,
    one_line,
    os_error_text,
    quiet_pipe,
    report_bug,
    warning_printer,
)
from ._errors import UserError
from ._index_cli import SUBCOMMANDS as index_cmds
from ._index_cli import Subcommand
from ._version import __version__
from .embed.cli import SUBCOMMANDS as embed_cmds
from .evaluation.cli import SUBCOMMANDS as evaluation_cmds
from .export.cli import SUBCOMMANDS as export_cmds
from .serve.cli import SUBCOMMANDS as serve_cmds
from .studies.cli import STUDY_RUNNER
from .studies.cli import SUBCOMMANDS as studies_cmds

__all__ = ["main", "build_parser", "subcommands", "EXIT_BUG"]

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


def subcommands() -> dict[str, Subcommand]:
    """The core subcommands plus those that live with their feature modules."""
    cmds = dict(index_cmds)
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
            epilog=None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        setup(p)  # a feature's setup may set p.epilog to its own examples
        p.set_defaults(_run=run, _flags=p.flags)
        if name == "eval":  # the composition root binds the studies into `dehub eval --studies`
            p.set_defaults(study_runner=STUDY_RUNNER)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; user mistakes are one line (exit 2), bugs a traceback (exit 70)."""
    args = build_parser().parse_args(argv)
    surface = cli_surface(getattr(args, "_flags", {}))
    old_show = warnings.showwarning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = warning_printer(surface)
            code = int(args._run(args) or 0)
            sys.stdout.flush()
            return code
    except BrokenPipeError:
        quiet_pipe()
        return 0
    except KeyboardInterrupt:
        print("dehub: interrupted", file=sys.stderr)
        return 130
    except UserError as exc:  # structured: rendered with this command's own flags
        print(f"dehub: error: {one_line(exc.render(surface))}", file=sys.stderr)
        return 2
    except ImportError as exc:
        if not missing_optional_package(exc):
            return report_bug(exc)
        print(f"dehub: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"dehub: error: {os_error_text(exc)}", file=sys.stderr)
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
        return report_bug(exc)
    finally:
        warnings.showwarning = old_show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
