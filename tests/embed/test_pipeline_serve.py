"""One pipeline end to end: dehub embed (12 shards) -> dehub build -> dehub serve -> the real
clip-retrieval ClipClient's text query, answered with the folder's url and caption."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

SERVE_TESTS = Path(__file__).resolve().parents[1] / "serve"


def _clip_client():
    """clip-retrieval's own client module, loaded without its heavy package __init__."""
    spec = importlib.util.find_spec("clip_retrieval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("clip-retrieval is not installed (make test installs it with --no-deps)")
    path = Path(next(iter(spec.submodule_search_locations))) / "clip_client.py"
    mod_spec = importlib.util.spec_from_file_location("clip_client_e2e", path)
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except ImportError as exc:
        pytest.skip(f"clip-retrieval's client does not import here: {exc}")
    return module


@pytest.mark.slow
def test_embed_build_serve_clipclient_text_query_with_url_and_caption(minilm, wordnet_text, tmp_path, capsys):
    pytest.importorskip("fastapi")
    clip = _clip_client()
    from dehub.cli import main

    defs = wordnet_text["test"]["definition"]
    gallery = [{"caption": t, "url": f"https://img.example/{i}.jpg"} for i, t in enumerate(defs[:240])]
    (tmp_path / "gallery.jsonl").write_text("\n".join(json.dumps(r) for r in gallery), encoding="utf-8")
    (tmp_path / "reference.txt").write_text("\n".join(wordnet_text["test"]["lemma"][:600]), encoding="utf-8")
    assert main(["embed", str(tmp_path / "gallery.jsonl"), "-o", str(tmp_path / "emb"), "--column", "caption",
                 "--shard-size", "20", "--quiet"]) == 0  # fmt: skip
    assert len(list((tmp_path / "emb" / "text_emb").glob("*.npy"))) == 12
    assert main(["embed", str(tmp_path / "reference.txt"), "-o", str(tmp_path / "ref"), "--quiet"]) == 0
    assert main(["build", "--gallery", str(tmp_path / "emb"), "--reference", str(tmp_path / "ref"),
                 "-o", str(tmp_path / "g.dehub"), "--k", "8", "--alpha", "0.75", "--keep-reference"]) == 0  # fmt: skip
    capsys.readouterr()
    import dehub

    index = dehub.Index.load(tmp_path / "g.dehub")
    assert index.metadata["encoder"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert index.metadata_rows([30])[0]["url"] == "https://img.example/30.jpg"

    sys.path.insert(0, str(SERVE_TESTS))
    try:
        from serve_helpers import ServerProcess
    finally:
        sys.path.remove(str(SERVE_TESTS))
    query = "a domesticated animal kept as a pet"
    server = ServerProcess([str(tmp_path / "g.dehub")])
    try:
        cc = clip.ClipClient(url=server.url + "/knn-service", indice_name="g", num_images=5)
        out = cc.query(text=query)
        import httpx

        item = httpx.get(server.url + f"/items/{out[0]['id']}", timeout=30).json()
        meta = httpx.post(server.url + "/metadata", json={"ids": [out[0]["id"]]}, timeout=30).json()
        page_answer = httpx.post(  # what the page asks for: details carry each result's url
            server.url + "/search", json={"text": [query], "k": 5, "details": True}, timeout=60
        ).json()
    finally:
        server.stop()
    q = minilm.encode_texts([query])
    _, ids = index.search(q, 5)
    assert [e["id"] for e in out] == ids[0].tolist()
    for e in out:
        assert e["url"] == f"https://img.example/{e['id']}.jpg"
        assert e["caption"] == defs[e["id"]]
    assert item["text"] == defs[out[0]["id"]] and item["metadata"]["url"] == out[0]["url"]
    assert meta[0]["metadata"]["url"] == out[0]["url"] and meta[0]["metadata"]["caption"] == out[0]["caption"]
    first = page_answer["results"][0]
    assert first["urls"] == [f"https://img.example/{i}.jpg" for i in first["ids"]]
    np.testing.assert_array_equal(index.ids, np.arange(240))
