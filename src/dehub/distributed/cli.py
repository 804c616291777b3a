"""``dehub build --runner ray``: the build subcommand's options, run on Ray.

``-o`` names the output directory (manifest + statistic parts), which ``dehub.load`` and
so ``dehub search``, ``dehub export`` and ``dehub serve`` read.
The cluster is ``RAY_ADDRESS`` when set (``ray job submit`` sets it), else a local one
with every CPU of this machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

from .._cli_support import load_npy, method_params
from .._errors import InputError, MissingExtraError
from ._runner import fit

__all__ = ["run_build"]


def run_build(args: argparse.Namespace) -> int:
    """Run ``dehub build`` with ``--runner ray``; user mistakes exit 2 with one line."""
    if getattr(args, "keep_reference", False):
        raise InputError(
            "--keep-reference is not available with --runner ray (the reference stays in its "
            "files; pass it to 'dehub add' instead)"
        )
    ids = load_npy(args.ids, "ids", mmap=False) if args.ids else None
    if importlib.util.find_spec("ray") is None:  # not imported here: fit sets Ray up first
        raise MissingExtraError("--runner ray", "Ray Data", "ray", module="ray")
    params = method_params(args)
    summary = fit(
        args.method,
        args.gallery,
        args.reference,
        args.output,
        memory_budget=args.memory_budget_mb * 2**20,
        engine=args.engine,
        engine_params=args.engine_params,
        normalize=args.normalize,
        ids=ids,
        progress=sys.stderr.isatty(),
        gallery_bank=args.gallery_bank,
        **params,
    )
    print(f"wrote {args.output}: {summary}")
    return 0
