"""docs/stores/langchain.md: both copy-paste blocks run as written and answer like the index."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("langchain_core")

PAGE = Path(__file__).resolve().parents[2] / "docs" / "stores" / "langchain.md"


def _block(heading: str) -> str:
    after = PAGE.read_text(encoding="utf-8").split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


@pytest.mark.slow
def test_langchain_page_snippets(pg_dsn, tmp_path, monkeypatch, capsys):
    pytest.importorskip("lancedb")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    scope: dict = {}
    exec(compile(_block("## From an index (copy-paste)"), "langchain.md#index", "exec"), scope)
    index, embeddings, docs = scope["index"], scope["embeddings"], scope["docs"]
    q = np.asarray(embeddings.embed_query("what about subject 7?"), dtype=np.float32)
    q /= np.linalg.norm(q)
    scores, ids = index.search(q[None, :], 4)
    assert [d.metadata["id"] for d in docs] == ids[0].tolist()
    assert docs[0].metadata["source"] == f"notes/{ids[0][0]}.md"
    assert len(capsys.readouterr().out.splitlines()) == 4
    exec(
        compile(_block("## From the pgvector or LanceDB export (copy-paste)"), "langchain.md#stores", "exec"),
        scope,
    )
    for got in (scope["pg_docs"], scope["lance_docs"]):
        assert [d.metadata["id"] for d in got] == ids[0].tolist()
        np.testing.assert_allclose(
            [d.metadata["corrected_score"] for d in got], scores[0], rtol=1e-4, atol=1e-5
        )
        assert got[0].page_content == scope["texts"][ids[0][0]]
