"""Exported d+1 FAISS indexes serve the corrected scores (plain FAISS on the reading side)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scale_helpers import needs_faiss

import dehub

pytestmark = needs_faiss

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fitted(clustered_data):
    g, r = clustered_data["gallery"], clustered_data["reference"]
    return dehub.Index.build(g, r, k=16, alpha=0.75, ids=np.arange(600) * 3 + 7)


def _serve(path, queries, top):
    import faiss

    meta = json.loads(Path(str(path) + ".json").read_text())
    index = faiss.read_index(str(path))
    if meta["search_params"].get("nprobe"):
        faiss.extract_index_ivf(index).nprobe = meta["search_params"]["nprobe"]
    q = np.hstack([queries, -np.ones((queries.shape[0], 1), np.float32)])
    return index.search(q, top)


def test_flat_export_equals_dehub_search(fitted, clustered_data, tmp_path):
    from dehub.export import export_faiss, load_sidecar

    path = export_faiss(fitted, tmp_path / "g.faiss", index_type="flat")
    q = clustered_data["queries"]
    scores, ids = _serve(path, q, 10)
    ref_scores, ref_ids = fitted.search(q, 10)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    side = load_sidecar(path)
    assert side["d"] == 32 and side["dim"] == 33 and side["method"] == "nnn"
    assert side["params"]["k"] == 16 and side["ids"] == fitted.ids.tolist()
    assert "-1" in side["query_transform"]


@pytest.mark.parametrize(("index_type", "floor"), [("ivf", 0.85), ("ivf-sq8", 0.8), ("hnsw", 0.9)])
def test_approximate_export_recall_floor(fitted, clustered_data, tmp_path, index_type, floor):
    from dehub.export import export_faiss

    path = export_faiss(fitted, tmp_path / "g.faiss", index_type=index_type, nprobe=8)
    q = np.vstack([clustered_data["queries"], clustered_data["gallery"][:150]])
    _, ids = _serve(path, q, 10)
    _, ref_ids = fitted.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ref_ids)])
    assert recall >= floor


def test_sidecar_detects_replaced_index(fitted, tmp_path):
    from dehub.export import export_faiss, load_sidecar

    path = export_faiss(fitted, tmp_path / "g.faiss")
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ValueError, match="does not match its sidecar"):
        load_sidecar(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.faiss", "g.faiss.json"]


def test_export_rejects_non_additive(tmp_path):
    from dehub.export import export_faiss

    class NotAdditive:
        name = "x"

    with pytest.raises(TypeError, match="not an additive correction"):
        export_faiss(NotAdditive(), tmp_path / "g.faiss")


def test_plain_faiss_example_runs_without_dehub_at_serving(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "serve_with_plain_faiss.py")],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert "same top-5: True" in out.stdout
    src = (ROOT / "examples" / "serve_with_plain_faiss.py").read_text()
    serve_src = src.split("def serve", 1)[1].split("def _demo", 1)[0]
    assert "dehub" not in serve_src.split('"""', 2)[-1]


def test_version1_sidecar_is_refused(fitted, tmp_path):
    """Sidecars of wave 1 (version 1: no form, M or self-checksum) are refused: a version
    field cannot switch the self-check off (issue 24)."""
    from dehub.export import SidecarError, export_faiss, load_sidecar

    path = export_faiss(fitted, tmp_path / "g.faiss")
    side = json.loads(Path(str(path) + ".json").read_text())
    for key in ("form", "M", "sidecar_sha256"):
        side.pop(key)
    side["version"] = 1
    Path(str(path) + ".json").write_text(json.dumps(side))
    with pytest.raises(SidecarError, match="format version 1; this dehub reads version 2 only"):
        load_sidecar(path)
