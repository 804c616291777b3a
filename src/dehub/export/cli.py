"""``dehub export INDEX --to faiss|lancedb|qdrant PATH``: the SUBCOMMANDS entry merged by dehub.cli."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["SUBCOMMANDS", "add_store_update_options", "update_store_from_args"]

_HELP = "export a corrected index to FAISS, LanceDB or Qdrant (d+1 or d+2 vectors)"


def _setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file written by 'dehub build'")
    p.add_argument("--to", required=True, choices=["faiss", "lancedb", "qdrant"], help="the store")
    p.add_argument(
        "path",
        help="faiss: the index file to write (+ PATH.json); lancedb: the database directory; "
        "qdrant: a local directory, :memory: or an http(s):// server URL",
    )
    p.add_argument(
        "--form",
        choices=["d+1", "d+2"],
        default="d+1",
        help="d+1: inner product; d+2: equal norm for L2/cosine",
    )
    p.add_argument("--name", default="dehub", help="LanceDB table / Qdrant collection name (default dehub)")
    p.add_argument(
        "--index",
        dest="index_type",
        choices=["flat", "ivf", "ivf-sq8", "hnsw"],
        default="flat",
        help="flat (exact), ivf (FAISS IVF / LanceDB IVF_PQ), ivf-sq8 (FAISS), hnsw (FAISS HNSW / "
        "LanceDB IVF_HNSW_SQ / Qdrant HNSW)",
    )
    p.add_argument("--metric", help="lancedb: dot|l2|cosine; qdrant: dot|cosine|euclid (default by form)")
    p.add_argument(
        "--variant",
        choices=["augmented", "rescore"],
        default="augmented",
        help="qdrant: rescore = plain vectors + formula",
    )
    p.add_argument(
        "--metadata",
        help="per-item metadata: an embedding folder, a parquet file or folder (rows = gallery rows)",
    )
    p.add_argument("--nprobe", type=int, help="FAISS IVF: lists probed per query (stored in the sidecar)")
    p.add_argument("--ef-search", type=int, help="FAISS HNSW: efSearch (stored in the sidecar)")
    p.add_argument(
        "--update", action="store_true", help="update a store exported earlier (after 'dehub add' / 'remove')"
    )


def _run(args: argparse.Namespace) -> int:
    from .._loading import load
    from . import export_faiss, export_lancedb, export_qdrant, update_store

    if args.to == "faiss" and args.metadata and not args.update:
        raise ValueError(
            "--metadata: a FAISS file stores no metadata; export to lancedb or qdrant to keep it"
        )
    index = load(args.index)  # an index file or a distributed run directory
    metadata = None
    if args.metadata:
        from ..datasets.layouts import read_metadata

        metadata = read_metadata(args.metadata)
        if metadata is None:
            raise ValueError(f"--metadata {args.metadata}: no metadata found there")
    if args.update:
        stats = update_store(index, args.to, args.path, name=args.name, metadata=metadata)
        print(
            f"updated {args.to} store {args.path}: {stats['added']} added, {stats['removed']} removed, "
            f"{stats['updated']} written" + (" (all items rewritten)" if stats["rewritten"] else "")
        )
        return 0
    if args.to == "faiss":
        if args.metadata:
            raise ValueError(
                "--metadata: a FAISS file stores no metadata; export to lancedb or qdrant to keep it"
            )
        params: dict[str, Any] = {}
        if args.nprobe is not None:
            params["nprobe"] = args.nprobe
        if args.ef_search is not None:
            params["ef_search"] = args.ef_search
        path = export_faiss(index, args.path, index_type=args.index_type, form=args.form, **params)
        print(f"wrote {path} and {path}.json: {index.n_items} items, {args.form}, {args.index_type}")
    elif args.to == "lancedb":
        lance_index = {"flat": None, "ivf": "ivf_pq", "hnsw": "ivf_hnsw_sq"}.get(args.index_type, "bad")
        if lance_index == "bad":
            raise ValueError(
                "--index ivf-sq8 is FAISS only; LanceDB takes flat, ivf (IVF_PQ) or hnsw (IVF_HNSW_SQ)"
            )
        table = export_lancedb(
            index,
            args.path,
            name=args.name,
            form=args.form,
            metric=args.metric,
            index=lance_index,
            metadata=metadata,
        )
        print(f"wrote LanceDB table {table.name!r} in {args.path}: {index.n_items} rows, {args.form}")
    else:
        if args.index_type in ("ivf", "ivf-sq8"):
            raise ValueError(f"--index {args.index_type}: Qdrant has no IVF index; use flat or hnsw")
        client = export_qdrant(
            index,
            args.path,
            name=args.name,
            form=args.form,
            distance=args.metric,
            variant=args.variant,
            metadata=metadata,
            hnsw_m=0 if args.index_type == "flat" else 16,
        )
        client.close()
        print(f"wrote Qdrant collection {args.name!r} at {args.path}: {index.n_items} points, {args.form}")
    return 0


def add_store_update_options(p: argparse.ArgumentParser) -> None:
    """Options for ``dehub add`` / ``dehub remove``: also update a store exported earlier."""
    p.add_argument(
        "--update-store",
        nargs=2,
        metavar=("TO", "PATH"),
        help="after the update, bring this exported store up to date: TO is faiss, lancedb or qdrant",
    )
    p.add_argument("--store-name", default="dehub", help="LanceDB table / Qdrant collection (default dehub)")


def update_store_from_args(args: argparse.Namespace, index) -> None:
    """Call :func:`dehub.export.update_store` if ``--update-store TO PATH`` was given."""
    target = getattr(args, "update_store", None)
    if not target:
        return
    to, path = target
    if to not in ("faiss", "lancedb", "qdrant"):
        raise ValueError(f"--update-store: TO must be faiss, lancedb or qdrant; received {to!r}")
    from .update import update_store

    stats = update_store(index, to, path, name=getattr(args, "store_name", "dehub"))
    print(
        f"updated {to} store {path}: {stats['added']} added, {stats['removed']} removed, {stats['updated']} written"
    )


SUBCOMMANDS = {"export": (_HELP, _setup, _run)}
