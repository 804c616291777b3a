"""``dehub export INDEX --to faiss|lancedb|qdrant|pgvector PATH`` and ``dehub export INDEX --to hnsw``
(the serving graph of ``dehub serve``, written next to the index): the SUBCOMMANDS entry merged by dehub.cli."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._errors import InputError
from .._loading import load
from ..datasets.layouts import read_metadata
from .faiss import export_faiss
from .hnsw import export_hnsw, graph_paths
from .lancedb import export_lancedb, lancedb_description
from .pgvector import export_pgvector
from .qdrant import export_qdrant
from .sidecar import load_sidecar
from .update import update_store, verify_store

__all__ = ["SUBCOMMANDS", "add_store_update_options", "update_store_from_args"]

_HELP = (
    "export a corrected index to FAISS, LanceDB, Qdrant or Postgres/pgvector (d+1 or d+2 vectors), "
    "or build the HNSW graph 'dehub serve' uses (--to hnsw)"
)
_STORES = ("faiss", "lancedb", "qdrant", "pgvector")


def _setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file written by 'dehub build'")
    p.add_argument(
        "--to",
        required=True,
        choices=[*_STORES, "hnsw"],
        help="the store; hnsw: the serving graph of 'dehub serve' (INDEX.hnsw + INDEX.hnsw.json next to "
        "the index, efSearch tuned to --recall), reused by the server with no rebuild",
    )
    p.add_argument(
        "path",
        help="faiss: the index file to write (+ PATH.json); lancedb: the database directory; "
        "qdrant: a local directory, :memory: or an http(s):// server URL; "
        "pgvector: a postgresql:// connection string; hnsw: INDEX.hnsw (next to the index, where "
        "'dehub serve INDEX' finds it; + INDEX.hnsw.json)",
    )
    p.add_argument(
        "--form",
        choices=["d+1", "d+2"],
        help="d+1: inner product; d+2: equal norm for L2/cosine (default d+1; d+2 for --to hnsw)",
    )
    p.add_argument("--hnsw-m", type=int, default=32, help="--to hnsw: graph degree M (default 32)")
    p.add_argument("--ef-construction", type=int, default=80, help="--to hnsw: efConstruction (default 80)")
    p.add_argument(
        "--name", default="dehub", help="LanceDB / Postgres table, Qdrant collection name (default dehub)"
    )
    p.add_argument(
        "--index",
        dest="index_type",
        choices=["flat", "ivf", "ivf-sq8", "hnsw"],
        default="flat",
        help="flat (exact), ivf (FAISS IVF / LanceDB IVF_PQ), ivf-sq8 (FAISS), hnsw (FAISS HNSW / "
        "LanceDB IVF_HNSW_SQ / Qdrant HNSW / pgvector HNSW)",
    )
    p.add_argument(
        "--metric",
        help="lancedb: dot|l2|cosine; qdrant: dot|cosine|euclid; pgvector: ip|l2|cosine (default by form)",
    )
    p.add_argument(
        "--recall",
        type=float,
        default=0.99,
        help="ANN exports: the recall@10 of dehub's exact corrected top-10 the stored search setting "
        "must reach on probe queries (default 0.99)",
    )
    p.add_argument(
        "--strict", action="store_true", help="refuse (write nothing) when no setting reaches --recall"
    )
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
    p.add_argument(
        "--ef-search",
        type=int,
        help="FAISS HNSW efSearch / pgvector hnsw.ef_search (else chosen by --recall)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--update",
        action="store_true",
        help="make a store exported earlier hold what the index says (after 'dehub add' / 'remove', or "
        "after edits behind dehub's back): compares ids, the searched vectors and the metric, repairs",
    )
    mode.add_argument(
        "--verify",
        action="store_true",
        help="compare a store exported earlier with the index (ids, duplicates, the searched vectors, "
        "the metric) and report; exit status 1 when they differ",
    )


def _print_recall(desc: dict) -> None:
    check = desc.get("recall_check")
    if check:
        print(
            f"recall@10 {check['recall_at_10']:.4f} of dehub's exact corrected top-10 on {check['n_probes']} "
            f"probe queries at {desc.get('search_params')} (target {check['target']}"
            + (")" if check["reached"] else ": NOT reached)")
        )


def _run(args: argparse.Namespace) -> int:
    if not 0.0 < args.recall <= 1.0:
        raise InputError(f"--recall must be in (0, 1]; received {args.recall}")
    if args.to == "hnsw":
        return _serving_graph(args)
    args.form = args.form or "d+1"
    if args.verify:
        diff = verify_store(load(args.index), args.to, args.path, name=args.name)
        print(f"{args.to} store {args.path}: " + ("matches the index" if diff.clean else diff.summary()))
        if not diff.clean:
            for key in ("missing", "extra", "duplicates", "changed"):
                if diff[key]:
                    print(f"  {key}: {diff[key][:20]}" + (" ..." if len(diff[key]) > 20 else ""))
            print("  repair with: dehub export INDEX --to ... PATH --update")
        return 0 if diff.clean else 1
    if args.to == "faiss" and args.metadata and not args.update:
        raise InputError(
            "--metadata: a FAISS file stores no metadata; export to lancedb or qdrant to keep it"
        )
    index = load(args.index)  # an index file or a distributed run directory
    metadata = None
    if args.metadata:
        metadata = read_metadata(args.metadata)
        if metadata is None:
            raise InputError(f"--metadata {args.metadata}: no metadata found there")
    if args.update:
        stats = update_store(index, args.to, args.path, name=args.name, metadata=metadata)
        print(_update_line(args.to, args.path, stats))
        return 0
    if args.to == "faiss":
        if args.metadata:
            raise InputError(
                "--metadata: a FAISS file stores no metadata; export to lancedb or qdrant to keep it"
            )
        params: dict[str, Any] = {}
        if args.nprobe is not None:
            params["nprobe"] = args.nprobe
        if args.ef_search is not None:
            params["ef_search"] = args.ef_search
        path = export_faiss(
            index,
            args.path,
            index_type=args.index_type,
            form=args.form,
            recall=args.recall,
            strict=args.strict,
            **params,
        )
        print(f"wrote {path} and {path}.json: {index.n_items} items, {args.form}, {args.index_type}")
        _print_recall(load_sidecar(path, verify=False))  # just written: sealed, bounded read
    elif args.to == "lancedb":
        lance_index = {"flat": None, "ivf": "ivf_pq", "hnsw": "ivf_hnsw_sq"}.get(args.index_type, "bad")
        if lance_index == "bad":
            raise InputError(
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
            recall=args.recall,
            strict=args.strict,
        )
        print(f"wrote LanceDB table {table.name!r} in {args.path}: {index.n_items} rows, {args.form}")
        _print_recall(lancedb_description(table))
    elif args.to == "pgvector":
        if args.index_type not in ("flat", "hnsw"):
            raise InputError(f"--index {args.index_type}: pgvector exports take flat or hnsw")
        desc = export_pgvector(
            index,
            args.path,
            table=args.name,
            form=args.form,
            metric=args.metric,
            index=None if args.index_type == "flat" else "hnsw",
            ef_search=args.ef_search,
            recall=args.recall,
            strict=args.strict,
            metadata=metadata,
        )
        print(f"wrote Postgres table {args.name!r}: {index.n_items} rows, {args.form}, {args.index_type}")
        ef = desc["search_params"].get("hnsw.ef_search")
        print(
            ("" if ef is None else f"SET hnsw.ef_search = {ef};\n")
            + f"SELECT id, -(embedding {desc['operator']} $1) AS score FROM {args.name} "
            f"ORDER BY embedding {desc['operator']} $1 LIMIT 10;   -- $1 = '[q_1,...,q_d,-1{',0' if args.form == 'd+2' else ''}]'"
        )
        _print_recall(desc)
    else:
        if args.index_type in ("ivf", "ivf-sq8"):
            raise InputError(f"--index {args.index_type}: Qdrant has no IVF index; use flat or hnsw")
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


def _serving_graph(args: argparse.Namespace) -> int:
    """``--to hnsw``: build (or reuse), tune and save the graph ``dehub serve`` will reuse."""
    where = graph_paths(args.index)[0]
    if Path(args.path).absolute() != where.absolute():
        raise InputError(
            f"--to hnsw: the graph goes next to the index, where 'dehub serve' finds it; expected PATH "
            f"{where}, received {args.path}"
        )
    if args.update or args.verify or args.metadata:
        raise InputError("--to hnsw takes no --update, --verify or --metadata")
    if args.hnsw_m < 4 or args.ef_construction < 8:
        raise InputError(
            f"--hnsw-m must be >= 4 and --ef-construction >= 8; received {args.hnsw_m}, {args.ef_construction}"
        )
    path, info = export_hnsw(
        args.index,
        recall=args.recall,
        form=args.form or "d+2",
        M=args.hnsw_m,
        ef_construction=args.ef_construction,
        progress=True,
        log=print,
    )
    reached = "" if info.recall >= info.target_recall else ": NOT reached"
    print(
        f"wrote {path} and {path}.json: {info.n_items} items, {info.form}, M {info.M}, efConstruction "
        f"{info.ef_construction}, built in {info.build_seconds} s; efSearch {info.ef_search} gives recall@10 "
        f"{info.recall} on {info.probe_source} (target {info.target_recall}{reached}); "
        f"'dehub serve {args.index} --backend hnsw' reuses it"
    )
    return 0


def _update_line(to: str, path, stats: dict) -> str:
    line = (
        f"updated {to} store {path}: {stats['added']} added, {stats['removed']} removed, "
        f"{stats['updated']} written" + (" (all items rewritten)" if stats["rewritten"] else "")
    )
    fixes = []
    if stats.get("duplicates"):
        fixes.append(f"{stats['duplicates']} duplicated ids made single")
    if stats.get("repaired"):
        fixes.append(f"{stats['repaired']} rows whose searched vector differed from the index rewritten")
    if stats.get("metric_fixed"):
        fixes.append(f"metric restored ({stats['diff']['metric']})")
    return line + ("; " + "; ".join(fixes) if fixes else "")


def add_store_update_options(p: argparse.ArgumentParser) -> None:
    """Options for ``dehub add`` / ``dehub remove``: also update a store exported earlier."""
    p.add_argument(
        "--update-store",
        nargs=2,
        metavar=("TO", "PATH"),
        help="after the update, bring this exported store up to date: TO is faiss, lancedb, qdrant or pgvector",
    )
    p.add_argument("--store-name", default="dehub", help="LanceDB table / Qdrant collection (default dehub)")


def update_store_from_args(args: argparse.Namespace, index) -> None:
    """Call :func:`dehub.export.update_store` if ``--update-store TO PATH`` was given."""
    target = getattr(args, "update_store", None)
    if not target:
        return
    to, path = target
    if to not in _STORES:
        raise InputError(f"--update-store: TO must be one of {', '.join(_STORES)}; received {to!r}")
    stats = update_store(index, to, path, name=getattr(args, "store_name", "dehub"))
    print(_update_line(to, path, stats))


SUBCOMMANDS = {"export": (_HELP, _setup, _run)}
