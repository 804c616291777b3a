"""Corrected indexes in the vector stores people run: FAISS, LanceDB, Qdrant, Postgres.

An offset correction (NNN and its family: ``s(q, r) = q . r - b(r)``) is exported as
augmented vectors (:mod:`dehub.export.vectors`): ``d+1`` for inner-product metrics,
``d+2`` (equal norm) for L2 and cosine. The store then returns the corrected top-k
through its own ANN, with no dehub code at query time: send it
:func:`query_vectors` ``(queries, form)``.

* :func:`export_faiss` — a FAISS file + checked JSON sidecar (flat, IVF, HNSW);
* :func:`export_lancedb` — a LanceDB table ``dehub`` (columns ``id``, ``vector``,
  ``bias``, metadata), with or without an ANN index;
* :func:`export_qdrant` — a Qdrant collection ``dehub`` (point ids = item ids, unnamed
  vectors, payload ``id``, ``bias``, metadata), or the ``formula`` rescoring variant;
* :func:`export_pgvector` — a Postgres table ``dehub`` (pgvector: ``id``, ``embedding``,
  ``bias``, metadata) with an HNSW ``vector_ip_ops`` index;
* every ANN export measures its recall@10 against dehub's exact corrected top-10 and
  stores the search setting that reaches the target (:mod:`dehub.export.recall`);
* :func:`update_store` — bring a store up to date after ``Index.add``/``remove``.

The CLI is ``dehub export INDEX --to faiss|lancedb|qdrant|pgvector PATH`` (:mod:`dehub.export.cli`).
"""

from __future__ import annotations

from .._errors import InputError
from .faiss import ExportType, build_faiss_index, export_faiss
from .lancedb import export_lancedb
from .pgvector import export_pgvector
from .qdrant import export_qdrant
from .recall import RecallCheck, RecallNotReached, RecallWarning
from .sidecar import SidecarError, load_sidecar
from .update import update_store
from .vectors import FORMS, augment_items, is_offset, item_vectors, query_vectors

__all__ = [
    "export_faiss",
    "export_lancedb",
    "export_qdrant",
    "export_pgvector",
    "RecallCheck",
    "RecallNotReached",
    "RecallWarning",
    "export_store",
    "update_store",
    "load_sidecar",
    "SidecarError",
    "build_faiss_index",
    "ExportType",
    "query_vectors",
    "item_vectors",
    "augment_items",
    "is_offset",
    "FORMS",
]


def export_store(source, to: str, location, **kwargs):
    """Dispatch to :func:`export_faiss` / :func:`export_lancedb` / :func:`export_qdrant` /
    :func:`export_pgvector`."""
    if to == "faiss":
        return export_faiss(source, location, **kwargs)
    if to == "lancedb":
        return export_lancedb(source, location, **kwargs)
    if to == "qdrant":
        return export_qdrant(source, location, **kwargs)
    if to == "pgvector":
        return export_pgvector(source, location, **kwargs)
    raise InputError(f"to must be one of 'faiss', 'lancedb', 'qdrant', 'pgvector'; received {to!r}")
