"""The LangChain retriever: langchain-core's own interfaces and its fake embeddings, no network."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("langchain_core")
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.retrievers import BaseRetriever

import dehub

TEXTS = [f"document number {i} about topic {i % 17}" for i in range(600)]
QUERIES = [f"question {j} on topic {j % 17}" for j in range(12)]


@pytest.fixture(scope="module")
def fake():
    return DeterministicFakeEmbedding(size=24)


@pytest.fixture(scope="module")
def setup(fake):
    g = np.asarray(fake.embed_documents(TEXTS), dtype=np.float32)
    ref = np.asarray(fake.embed_documents([f"reference text {j}" for j in range(900)]), dtype=np.float32)
    index = dehub.Index.build(g, ref, k=8, alpha=0.75, ids=np.arange(600) * 3 + 1, normalize="l2")
    meta = [{"source": f"doc{i}.txt"} for i in range(600)]
    return index, meta


def _expected(index, fake, query, k):
    q = np.asarray(fake.embed_query(query), dtype=np.float32)
    q /= np.linalg.norm(q)
    scores, ids = index.search(q[None, :], k)
    rows = {int(i): r for r, i in enumerate(index.ids)}
    raw = [float(np.dot(index.model.gallery_[rows[int(i)]], q)) for i in ids[0]]
    return ids[0].tolist(), scores[0], np.asarray(raw)


def _check(docs, index, fake, query, k, text_of):
    ids, corrected, raw = _expected(index, fake, query, k)
    assert all(isinstance(d, Document) for d in docs)
    assert [d.metadata["id"] for d in docs] == ids
    np.testing.assert_allclose([d.metadata["corrected_score"] for d in docs], corrected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([d.metadata["raw_score"] for d in docs], raw, rtol=1e-4, atol=1e-5)
    rows = {int(i): r for r, i in enumerate(index.ids)}
    assert [d.page_content for d in docs] == [text_of(rows[i]) for i in ids]


def test_retriever_over_an_index(setup, fake):
    from dehub.export.langchain import DehubRetriever

    index, meta = setup
    retriever = DehubRetriever.from_index(index, fake, texts=TEXTS, metadatas=meta, k=5)
    assert isinstance(retriever, BaseRetriever)
    for query in QUERIES:
        docs = retriever.invoke(query)
        _check(docs, index, fake, query, 5, lambda r: TEXTS[r])
        assert docs[0].metadata["source"] == f"doc{(docs[0].metadata['id'] - 1) // 3}.txt"
    # batch and the score threshold (on the corrected score, not a min-max normalised one)
    batch = retriever.batch(QUERIES[:3])
    assert [[d.metadata["id"] for d in b] for b in batch] == [
        _expected(index, fake, q, 5)[0] for q in QUERIES[:3]
    ]
    cut = float(_expected(index, fake, QUERIES[0], 5)[1][2])
    strict = DehubRetriever.from_index(index, fake, texts=TEXTS, k=5, score_threshold=cut)
    assert len(strict.invoke(QUERIES[0])) == 3
    with pytest.raises(ValueError, match="one entry per index item"):
        DehubRetriever.from_index(index, fake, texts=TEXTS[:5])


def test_retriever_over_the_lancedb_export(setup, fake, tmp_path):
    pytest.importorskip("lancedb")
    from dehub.export import export_lancedb
    from dehub.export.langchain import DehubRetriever

    index, meta = setup
    export_lancedb(index, tmp_path / "db", metadata={"text": TEXTS, "source": [m["source"] for m in meta]})
    retriever = DehubRetriever.from_lancedb(tmp_path / "db", fake, k=6)
    for query in QUERIES[:5]:
        docs = retriever.invoke(query)
        _check(docs, index, fake, query, 6, lambda r: TEXTS[r])
        assert docs[0].metadata["source"].startswith("doc")


def test_retriever_over_the_pgvector_export(setup, fake, pg_dsn):
    from dehub.export import export_pgvector
    from dehub.export.langchain import DehubRetriever

    index, meta = setup
    export_pgvector(index, pg_dsn, table="lc", index=None, metadata={"text": TEXTS})
    retriever = DehubRetriever.from_pgvector(pg_dsn, fake, table="lc", k=6)
    for query in QUERIES[:5]:
        _check(retriever.invoke(query), index, fake, query, 6, lambda r: TEXTS[r])
