"""Planning, reading and committing parts, and reading a run back (no Ray needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dehub.distributed import ManifestError, load_index, read_manifest
from dehub.rundir import (
    list_sources,
    plan_parts,
    read_part,
    run_key,
    validate_part,
    write_manifest,
    write_part,
)


@pytest.fixture
def shards(tmp_path, rng, unit):
    d = tmp_path / "img_emb"
    d.mkdir()
    arrays = [unit(rng, n, 8) for n in (10, 1030, 260)]
    for i, a in enumerate(arrays):
        np.save(d / f"img_emb_{i}.npy", a)
    return d, arrays


def test_parts_tile_the_gallery_in_order_and_tiny_tails_join(shards):
    d, arrays = shards
    sources = list_sources(d, "gallery")
    assert [s.rows for s in sources] == [10, 1030, 260]
    parts = plan_parts(sources, 256)
    # 1030 = 4 x 256 + 6 and 260 = 256 + 4: tails under 8 rows join the part before them
    # (a GEMM of a few rows may round differently in BLAS)
    assert [p.rows for p in parts] == [10, 256, 256, 256, 262, 260]
    assert [p.first for p in parts] == [0, 10, 266, 522, 778, 1040]
    whole = np.concatenate([read_part(p) for p in parts])
    np.testing.assert_array_equal(whole, np.concatenate(arrays))


def test_fsspec_urls_read_the_same_rows(shards):
    pytest.importorskip("fsspec")
    d, arrays = shards
    local = plan_parts(list_sources(d, "gallery"), 100)
    remote = plan_parts(list_sources(f"file://{d}", "gallery"), 100)
    assert [p.rows for p in local] == [p.rows for p in remote]
    for a, b in zip(local, remote):
        np.testing.assert_array_equal(read_part(a), read_part(b))


def test_inputs_that_are_not_plain_npy_are_named(tmp_path):
    np.save(tmp_path / "f.npy", np.asfortranarray(np.ones((4, 3), dtype=np.float32)))
    with pytest.raises(ValueError, match=r"f\.npy: column-major"):
        list_sources(tmp_path / "f.npy", "gallery")
    np.save(tmp_path / "i.npy", np.ones((4, 3), dtype=np.int32))
    with pytest.raises(ValueError, match=r"i\.npy: expected float16, float32 or float64.*int32"):
        list_sources(tmp_path / "i.npy", "gallery")
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(ValueError, match=r"reads \.npy files"):
        list_sources(tmp_path / "x.parquet", "gallery")


def _commit(out, part, key, rng):
    stats = {
        "topk_scores": rng.random((part.rows, 3), dtype=np.float32),
        "topk_ids": rng.integers(0, 99, (part.rows, 3)),
    }
    return write_part(out, part, key, stats, seconds=0.0), stats


def test_a_committed_part_validates_only_for_its_run_and_intact_files(shards, tmp_path, rng):
    d, _ = shards
    part = plan_parts(list_sources(d, "gallery"), 256)[1]
    out = tmp_path / "out"
    key = run_key({"method": "nnn", "params": {"k": 3}})
    record, _ = _commit(out, part, key, rng)
    assert validate_part(out, part, key) == record
    assert validate_part(out, part, run_key({"method": "nnn", "params": {"k": 4}})) is None
    f = out / "parts" / record["files"]["topk_ids"]["file"]
    f.write_bytes(f.read_bytes()[:-1] + b"\x01")
    assert validate_part(out, part, key) is None  # checksum
    f.unlink()
    assert validate_part(out, part, key) is None  # missing file
    assert not list((out / "parts").glob(".*tmp"))  # atomic writes leave no temporary file


def test_load_index_checks_manifest_and_checksums(shards, tmp_path, rng):
    d, arrays = shards
    gallery = list_sources(d, "gallery")
    parts = plan_parts(gallery, 512)
    out = tmp_path / "out"
    key = run_key({"x": 1})
    records, stats = zip(*(_commit(out, p, key, rng) for p in parts))
    write_manifest(
        out,
        config={"method": "nnn", "params": {"k": 3, "alpha": 0.5}, "n_reference": 50, "engine": "exact"},
        key=key,
        gallery=gallery,
        reference=gallery[:1],
        records=list(records),
        summary={},
        ids_sha256=None,
    )
    index = load_index(out)
    assert index.n_items == 1300 and index.dim == 8
    np.testing.assert_array_equal(
        np.asarray(index.model.topk_scores_), np.concatenate([s["topk_scores"] for s in stats])
    )
    np.testing.assert_array_equal(np.asarray(index.model.gallery_), np.concatenate(arrays))
    assert index.search(arrays[0][:2], 3)[1].shape == (2, 3)
    f = out / "parts" / records[0]["files"]["topk_scores"]["file"]
    f.write_bytes(f.read_bytes()[:-4] + b"\0\0\0\1")
    with pytest.raises(ManifestError, match="does not match its checksum"):
        load_index(out)
    m = json.loads((out / "manifest.json").read_text())
    m["format_version"] = 99
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="format version 99"):
        read_manifest(out)
    with pytest.raises(ManifestError, match="no manifest.json"):
        load_index(tmp_path)


def test_a_gap_between_parts_is_refused(shards, tmp_path, rng):
    d, _ = shards
    gallery = list_sources(d, "gallery")
    parts = plan_parts(gallery, 512)
    out = tmp_path / "out"
    records = [_commit(out, p, "k", rng)[0] for p in parts]
    with pytest.raises(ManifestError, match="starts at row"):
        write_manifest(
            out,
            config={},
            key="k",
            gallery=gallery,
            reference=gallery,
            records=records[1:],
            summary={},
            ids_sha256=None,
        )


def test_cli_refuses_a_method_that_does_not_decompose_in_one_line(shards, tmp_path, capsys):
    pytest.importorskip("ray", reason="--runner ray needs Ray")
    from dehub.cli import main

    d, _ = shards
    rc = main(
        [
            "build",
            "--runner",
            "ray",
            "--method",
            "dn",
            "--gallery",
            str(d),
            "--reference",
            str(d),
            "-o",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "method 'dn'" in err[0] and "cannot be fitted by the distributed runner" in err[0]


def _written_run(shards, tmp_path, rng):
    d, _ = shards
    gallery = list_sources(d, "gallery")
    out = tmp_path / "out"
    key = run_key({"x": 1})
    records = [_commit(out, p, key, rng)[0] for p in plan_parts(gallery, 512)]
    write_manifest(
        out,
        config={"method": "nnn", "params": {"k": 3, "alpha": 0.75}, "n_reference": 50, "engine": "exact"},
        key=key,
        gallery=gallery,
        reference=gallery[:1],
        records=records,
        summary={},
        ids_sha256=None,
    )
    return out


def test_an_edited_manifest_is_refused(shards, tmp_path, rng):
    """Before: alpha changed from 0.75 to 9 by hand loaded silently (no self-checksum)."""
    out = _written_run(shards, tmp_path, rng)
    assert load_index(out).model.alpha == 0.75
    m = json.loads((out / "manifest.json").read_text())
    assert m["format_version"] == 2 and len(m["manifest_sha256"]) == 64
    m["params"]["alpha"] = 9
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match=r"manifest\.json: its content does not match its own checksum"):
        load_index(out)
    # a downgrade to the unsealed version 1 cannot switch the check off
    del m["manifest_sha256"]
    m["format_version"] = 1
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match=r"format version 1; this dehub reads version 2 only"):
        load_index(out)


def test_a_manifest_nested_100k_deep_gives_a_clear_error(shards, tmp_path, rng):
    """Before: RecursionError traceback from json.loads."""
    out = _written_run(shards, tmp_path, rng)
    (out / "manifest.json").write_text('{"kind": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(
        ManifestError, match=r"manifest\.json: JSON nested 100001 levels deep; expected at most 32"
    ):
        read_manifest(out)
