"""The FAISS sidecar is sealed like every stored description (issue 24, item 2): a
downgraded version cannot skip the self-check, search parameters are checked against
their index type and range, and the bounded reader refuses a 100k-deep document."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

pytest.importorskip("faiss")


def _sidecar(path) -> Path:
    return Path(str(path) + ".json")


def _reseal(side: dict) -> None:
    body = {k: v for k, v in side.items() if k != "sidecar_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    side["sidecar_sha256"] = hashlib.sha256(canonical).hexdigest()


def test_downgraded_version1_sidecar_without_checksum_is_refused(index, tmp_path):
    """Before: ``"version": 1`` with the checksum deleted skipped the self-check, so an
    alpha edit loaded."""
    from dehub.export import SidecarError, export_faiss, load_sidecar

    path = export_faiss(index, tmp_path / "g.faiss")
    side = json.loads(_sidecar(path).read_text())
    del side["sidecar_sha256"]
    side["version"] = 1
    side["params"]["alpha"] = 9.0
    _sidecar(path).write_text(json.dumps(side))
    with pytest.raises(SidecarError, match=r"format version 1; this dehub reads version 2 only"):
        load_sidecar(path)
    with pytest.raises(SidecarError, match=r"format version 1"):
        load_sidecar(path, verify=False)


@pytest.mark.parametrize(
    ("index_type", "params", "message"),
    [
        (
            "ivf",
            {"nprobe": 1e9},
            r"nprobe = 1000000000\.0; expected an integer in \[1, 2000\] \(the index's n_items\)",
        ),
        ("ivf", {"nprobe": 10**9}, r"nprobe = 1000000000; expected an integer in \[1, 2000\]"),
        ("ivf", {"nprobe": 1500}, r"nprobe = 1500; expected an integer in \[1, \d\d\] \(the index's nlist\)"),
        ("ivf", {"nprobe": 0}, r"nprobe = 0; expected an integer"),
        ("ivf", {"nprobe": True}, r"nprobe = True; expected an integer"),
        ("hnsw", {"efSearch": 2**40}, r"efSearch = 1099511627776; expected an integer in \[1, 2147483647\]"),
        ("hnsw", {"nprobe": 4}, r"'nprobe' does not apply to index_type 'hnsw' \(expected efSearch\)"),
        ("flat", {"nprobe": 4}, r"'nprobe' does not apply to index_type 'flat' \(expected none\)"),
    ],
)
def test_resealed_search_params_out_of_range_are_refused(index, tmp_path, index_type, params, message):
    """Before: a re-sealed ``{"nprobe": 1e9}`` loaded and reached FAISS, which raised a raw
    RuntimeError in the server."""
    from dehub.export import SidecarError, export_faiss, load_sidecar

    path = export_faiss(index, tmp_path / "g.faiss", index_type=index_type)
    side = json.loads(_sidecar(path).read_text())
    side["search_params"] = params
    _reseal(side)
    _sidecar(path).write_text(json.dumps(side))
    with pytest.raises(SidecarError, match=message):
        load_sidecar(path)


def test_sidecar_nested_100k_deep_gives_a_clear_error(index, tmp_path):
    from dehub.export import SidecarError, export_faiss, load_sidecar

    path = export_faiss(index, tmp_path / "g.faiss")
    _sidecar(path).write_text('{"kind": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(
        SidecarError, match=r"g\.faiss\.json: JSON nested 100001 levels deep; expected at most 16 levels"
    ):
        load_sidecar(path)
