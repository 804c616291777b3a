"""FAISS exports in both forms: exact for flat, recall@10 >= 0.99 for IVF and HNSW; sidecar checks.

The serving helper ``_serve`` uses only faiss, json and numpy (no dehub).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from export_helpers import assert_same_ranking, recall_at_10

faiss = pytest.importorskip("faiss")


def _serve(path, queries, top):
    """Plain FAISS serving: read the sidecar, form [q, -1] (d+1) or [q, -1, 0] (d+2)."""
    meta = json.loads(Path(str(path) + ".json").read_text())
    index = faiss.read_index(str(path))
    sp = meta["search_params"]
    if sp.get("nprobe"):
        faiss.extract_index_ivf(index).nprobe = sp["nprobe"]
    if sp.get("efSearch"):
        faiss.downcast_index(faiss.downcast_index(index).index).hnsw.efSearch = sp["efSearch"]
    tail = [-1.0] if meta["form"] == "d+1" else [-1.0, 0.0]
    q = np.hstack([queries, np.tile(np.float32(tail), (queries.shape[0], 1))]).astype(np.float32)
    return index.search(q, top)


@pytest.mark.parametrize("form", ["d+1", "d+2"])
def test_flat_export_equals_exact_corrected_search(index, data, exact, tmp_path, form):
    from dehub.export import export_faiss, load_sidecar

    path = export_faiss(index, tmp_path / "g.faiss", index_type="flat", form=form)
    scores, ids = _serve(path, data["queries"], 10)
    assert_same_ranking(ids, exact)
    side = load_sidecar(path)
    assert side["form"] == form and side["dim"] == 32 + (1 if form == "d+1" else 2)
    if form == "d+1":
        np.testing.assert_allclose(scores, exact[0], atol=2e-5)
    else:  # L2 distance = |q'|^2 + M^2 - 2 * corrected score
        qn = 1.0 + np.sum(data["queries"] ** 2, axis=1, keepdims=True)
        np.testing.assert_allclose(scores, qn + side["M"] ** 2 - 2 * exact[0], atol=2e-4)


# Documented parameters (docs/stores/faiss.md): IVF nprobe = nlist / 2 here (51 lists),
# HNSW M=32, efConstruction=80, efSearch=128.
@pytest.mark.parametrize("form", ["d+1", "d+2"])
@pytest.mark.parametrize(("index_type", "params"), [("ivf", {"nprobe": 26}), ("hnsw", {"ef_search": 128})])
def test_ann_export_recall(index, data, exact, tmp_path, form, index_type, params):
    from dehub.export import export_faiss

    path = export_faiss(index, tmp_path / "g.faiss", index_type=index_type, form=form, **params)
    _, ids = _serve(path, data["queries"], 10)
    assert recall_at_10(ids, exact[1]) >= 0.99


def _rewrite(path, edit, *, rehash: bool):
    sp = Path(str(path) + ".json")
    side = json.loads(sp.read_text())
    edit(side)
    if rehash:
        body = {k: v for k, v in side.items() if k != "sidecar_sha256"}
        side["sidecar_sha256"] = hashlib.sha256(
            json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
    sp.write_text(json.dumps(side))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("params", {"k": 16, "alpha": 0.5}),
        ("params", {"k": 8, "alpha": 0.75}),
        ("d", 31),
        ("dim", 34),
        ("n_items", 1999),
        ("ids", "swap"),
        ("version", 1),
        ("version", 3),
        ("M", 2.0),
        ("form", "d+2"),
    ],
)
def test_sidecar_tampering_detected(index, tmp_path, field, value):
    from dehub.export import SidecarError, export_faiss, load_sidecar

    path = export_faiss(index, tmp_path / "g.faiss")

    def edit(side):
        if value == "swap":
            side["ids"][0], side["ids"][1] = side["ids"][1], side["ids"][0]
        elif field == "params":
            side["params"].update(value)
        else:
            side[field] = value

    _rewrite(path, edit, rehash=False)
    with pytest.raises(SidecarError, match="own checksum|format version"):
        load_sidecar(path, verify=False)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("d", 31, "needs dim = d"),
        ("n_items", 1999, "n_items = 1999 but it lists 2000 ids"),
        ("ids", "dup", "not unique"),
        ("metric", "l2", "does not serve form"),
        ("version", 7, "format version 7"),
        ("form", "d+2", "dim = 33 but form 'd\\+2'"),
    ],
)
def test_sidecar_inconsistent_fields_detected_even_when_rehashed(index, tmp_path, field, value, message):
    from dehub.export import SidecarError, export_faiss, load_sidecar

    path = export_faiss(index, tmp_path / "g.faiss")

    def edit(side):
        if value == "dup":
            side["ids"][1] = side["ids"][0]
        else:
            side[field] = value

    _rewrite(path, edit, rehash=True)
    with pytest.raises(SidecarError, match=message):
        load_sidecar(path)


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("dim", "FAISS file holds 33-dimensional"),
        ("n_items", "FAISS file holds 2000 vectors"),
        ("ids", "ids differ"),
    ],
)
def test_sidecar_checked_against_the_faiss_file(index, tmp_path, field, message):
    """A self-consistent sidecar that describes another file (same SHA-256) is refused."""
    from dehub.export import SidecarError, export_faiss, load_sidecar

    path = export_faiss(index, tmp_path / "g.faiss")

    def edit(side):
        if field == "dim":
            side.update(form="d+2", dim=34, M=1.5, metric="l2")
        elif field == "n_items":
            side["ids"] = side["ids"][:-1]
            side["n_items"] = 1999
        else:
            side["ids"][-1] = 10**9

    _rewrite(path, edit, rehash=True)
    load_sidecar(path, verify=False)  # consistent in itself
    with pytest.raises(SidecarError, match=message):
        load_sidecar(path)


def test_sidecar_unreadable_or_missing(index, tmp_path):
    from dehub.export import SidecarError, export_faiss, load_sidecar

    path = export_faiss(index, tmp_path / "g.faiss")
    Path(str(path) + ".json").write_text("[" * 5000)
    with pytest.raises(SidecarError, match="not valid JSON|not a dehub|nested 5000 levels"):
        load_sidecar(path)
    Path(str(path) + ".json").unlink()
    with pytest.raises(SidecarError, match="no sidecar"):
        load_sidecar(path)


# ------------------------------------------------------------------ the recall check
@pytest.mark.parametrize("form", ["d+1", "d+2"])
@pytest.mark.parametrize("index_type", ["ivf", "hnsw"])
@pytest.mark.parametrize("dataset", ["minilm", "planted_hubs"])
def test_stored_setting_reaches_the_recall_target_on_held_out_queries(
    request, tmp_path, dataset, index_type, form
):
    """The sidecar's setting (chosen on probe queries) reaches recall@10 >= 0.99 of dehub's
    exact corrected top-10 on other queries, read back and served with faiss alone."""
    from dehub.export import export_faiss

    index, queries = request.getfixturevalue(dataset)
    path = export_faiss(index, tmp_path / "g.faiss", index_type=index_type, form=form)
    side = json.loads((tmp_path / "g.faiss.json").read_text())
    check = side["recall_check"]
    assert check["reached"] and check["recall_at_10"] >= 0.99 and check["n_probes"] == 200
    assert side["search_params"] == check["tried"][-1]["params"]
    _, ids = _serve(path, queries, 10)
    _, ref = index.search(queries, 10)
    assert recall_at_10(ids, ref) >= 0.985  # held-out: the target up to sampling error


def test_recall_check_warns_or_refuses_when_the_setting_falls_short(index, tmp_path):
    from dehub.export import RecallNotReached, RecallWarning, export_faiss

    with pytest.warns(RecallWarning, match="no search setting reached recall@10 0.99"):
        export_faiss(index, tmp_path / "a.faiss", index_type="ivf", nprobe=1)
    side = json.loads((tmp_path / "a.faiss.json").read_text())
    assert side["search_params"] == {"nprobe": 1} and not side["recall_check"]["reached"]
    with pytest.raises(RecallNotReached, match="--strict"):
        export_faiss(index, tmp_path / "b.faiss", index_type="ivf", nprobe=1, strict=True)
    assert not (tmp_path / "b.faiss").exists() and not (tmp_path / "b.faiss.json").exists()


def test_missing_faiss_names_the_extra_and_the_other_stores(index, tmp_path, monkeypatch, capsys):
    """Without FAISS, `dehub export --to faiss` says how to install it (from a clone, not
    `pip install dehub[...]`) and which stores work without it; no engine options."""
    import dehub.export.faiss as fx
    from dehub.cli import main

    def missing():
        raise ImportError("No module named 'faiss'")

    monkeypatch.setattr(fx, "import_faiss", missing)
    index.save(tmp_path / "g.dehub")
    code = main(["export", str(tmp_path / "g.dehub"), "--to", "faiss", str(tmp_path / "g.faiss")])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "pip install -e '.[faiss]'" in err and "--to lancedb, qdrant or pgvector" in err
    assert "pip install dehub[" not in err and "engine" not in err


def test_cli_prints_the_measured_recall_and_strict_refuses(index, tmp_path, capsys):
    from dehub.cli import main

    index.save(tmp_path / "g.dehub")
    assert (
        main(
            [
                "export",
                str(tmp_path / "g.dehub"),
                "--to",
                "faiss",
                str(tmp_path / "h.faiss"),
                "--index",
                "hnsw",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "recall@10 " in out and "of dehub's exact corrected top-10 on 200 probe queries" in out
    assert "NOT reached" not in out
    code = main(["export", str(tmp_path / "g.dehub"), "--to", "faiss", str(tmp_path / "i.faiss"), "--index", "ivf",
                 "--nprobe", "1", "--strict"])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "--strict" in err and "Traceback" not in err
    assert not (tmp_path / "i.faiss").exists()
