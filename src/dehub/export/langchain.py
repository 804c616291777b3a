"""A LangChain retriever over a corrected index: dehub itself, or its pgvector / LanceDB export.

RAG frameworks rank by the plain similarity of their vector store; per-item corrections
(a boost, a decay, NNN's hub penalty) are not expressible inside their vector search, and
their relevance functions squash unbounded inner products into ``[0, 1]`` with guesses
that break thresholds (LangChain #22209, #38506). :class:`DehubRetriever` is a
``langchain_core`` ``BaseRetriever`` that embeds the query with any LangChain
``Embeddings`` and returns the *corrected* top-k as ``Document`` objects:

* ``page_content``: the item's text (``texts=`` or the store's text column);
* ``metadata``: the item's metadata plus ``id``, ``raw_score`` (``q . r``, the plain inner
  product) and ``corrected_score`` (``q . r - b(r)``, what the ranking used).

Score semantics: ``corrected_score`` is an inner product minus the item's hubness bias;
it is not bounded to ``[0, 1]`` and not comparable across indexes fitted with other
``alpha`` / ``k``. A ``score_threshold`` is therefore a threshold on the corrected score
in the units of your embeddings (e.g. with unit vectors ``q . r`` lies in ``[-1, 1]`` and
``b(r)`` is ``alpha`` times a mean of such products). Do not min-max normalise per query:
that maps the best item of *every* query to 1, so a threshold no longer means "this
close" and an unrelated query still returns results.

Backends (constructors): :meth:`DehubRetriever.from_index` (exact, in process),
:meth:`from_pgvector` (the table written by :func:`dehub.export.export_pgvector`, queried
with its stored ``hnsw.ef_search``) and :meth:`from_lancedb` (the table written by
:func:`dehub.export.export_lancedb`, with its stored search parameters). Needs the
``langchain`` extra (``langchain-core``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._errors import InputError

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "dehub.export.langchain needs langchain-core, in dehub's 'langchain' extra: from a clone of "
        "dehub, pip install -e '.[langchain]'"
    ) from exc

from .lancedb import lancedb_connect, lancedb_query
from .pgvector import pgvector_connect, pgvector_query

__all__ = ["DehubRetriever", "Hit"]

#: one answer of a backend: (item id, raw score q.r, corrected score q.r - b, metadata)
Hit = tuple[int, float, float, dict[str, Any]]


class DehubRetriever(BaseRetriever):
    """Corrected top-``k`` retrieval as LangChain ``Document`` objects (see the module doc).

    Build it with :meth:`from_index`, :meth:`from_pgvector` or :meth:`from_lancedb`;
    ``search`` is the backend: ``(query vector, k) -> list[Hit]``, best first.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    embeddings: Embeddings
    search: Callable[[np.ndarray, int], list[Hit]]
    k: int = 4
    text_key: str = "text"
    score_threshold: float | None = None
    #: L2-normalise the query embedding first (NNN and its family assume cosine similarity;
    #: build the index with ``normalize="l2"`` too). False for embeddings meant as raw
    #: inner products.
    normalize_query: bool = True

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        if not isinstance(self.k, int) or self.k < 1:
            raise InputError(f"k must be a positive integer; received {self.k!r}")
        q = np.asarray(self.embeddings.embed_query(query), dtype=np.float32)
        if self.normalize_query:
            norm = float(np.linalg.norm(q))
            if norm > 0:
                q = q / np.float32(norm)
        docs = []
        for item_id, raw, corrected, meta in self.search(q, self.k):
            if self.score_threshold is not None and corrected < self.score_threshold:
                continue
            meta = dict(meta)
            text = meta.pop(self.text_key, None)
            meta.update({"id": int(item_id), "raw_score": float(raw), "corrected_score": float(corrected)})
            docs.append(Document(page_content="" if text is None else str(text), metadata=meta))
        return docs

    # ------------------------------------------------------------------ backends
    @classmethod
    def from_index(
        cls,
        index,
        embeddings: Embeddings,
        *,
        texts: Sequence[str] | None = None,
        metadatas: Sequence[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> DehubRetriever:
        """Over a ``dehub.Index`` in this process (exact corrected search).

        ``texts`` / ``metadatas``: one per gallery row (the documents' ``page_content`` and
        metadata).
        """
        n = index.n_items
        for name, seq in (("texts", texts), ("metadatas", metadatas)):
            if seq is not None and len(seq) != n:
                raise InputError(f"{name} must have one entry per index item ({n}); received {len(seq)}")
        model = index.model
        row_of = {int(i): r for r, i in enumerate(np.asarray(index.ids).tolist())}
        bias = np.asarray(model.bias_, dtype=np.float64) if hasattr(model, "bias_") else None
        text_key = kwargs.get("text_key", "text")

        def search(q: np.ndarray, k: int) -> list[Hit]:
            scores, ids = index.search(q[None, :], k, normalize="none")
            hits: list[Hit] = []
            for s, i in zip(scores[0].tolist(), ids[0].tolist()):
                if i < 0:
                    continue
                r = row_of[int(i)]
                raw = float(np.dot(np.asarray(model.gallery_[r], np.float64), q)) if bias is not None else s
                meta = dict(metadatas[r]) if metadatas is not None else {}
                if texts is not None:
                    meta[text_key] = texts[r]
                hits.append((int(i), raw, float(s), meta))
            return hits

        return cls(embeddings=embeddings, search=search, **kwargs)

    @classmethod
    def from_pgvector(
        cls, dsn, embeddings: Embeddings, *, table: str = "dehub", text_column: str = "text", **kwargs: Any
    ) -> DehubRetriever:
        """Over a Postgres table written by :func:`dehub.export.export_pgvector`.

        Runs the documented ``ORDER BY embedding <op> $1 LIMIT k`` at the stored
        ``hnsw.ef_search``; ``raw_score = corrected_score + bias`` (the bias column).
        """
        conn = pgvector_connect(dsn)

        def search(q: np.ndarray, k: int) -> list[Hit]:
            return [(i, c + b, c, meta) for i, c, b, meta in pgvector_query(conn, q, k, table=table)]

        return cls(embeddings=embeddings, search=search, text_key=text_column, **kwargs)

    @classmethod
    def from_lancedb(
        cls, uri, embeddings: Embeddings, *, name: str = "dehub", text_column: str = "text", **kwargs: Any
    ) -> DehubRetriever:
        """Over a LanceDB table written by :func:`dehub.export.export_lancedb` (its stored
        search parameters); the corrected score is computed from the stored vector."""
        table = lancedb_connect(uri).open_table(name)

        def search(q: np.ndarray, k: int) -> list[Hit]:
            return [(i, c + b, c, meta) for i, c, b, meta in lancedb_query(table, q, k)]

        return cls(embeddings=embeddings, search=search, text_key=text_column, **kwargs)
