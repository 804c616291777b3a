"""The `dehub` command line, end to end through dehub.cli.main on temporary .npy files."""

from __future__ import annotations

import numpy as np
import pytest

from dehub import Index
from dehub.cli import build_parser, main
from reference_nnn import assert_topk_match, ref_nnn_search


@pytest.fixture
def files(tmp_path, rng, unit):
    gallery, reference, queries = unit(rng, 30, 8), unit(rng, 70, 8), unit(rng, 6, 8)
    paths = {}
    for name, arr in {"gallery": gallery, "reference": reference, "queries": queries}.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr)
    paths["ids"] = tmp_path / "ids.npy"
    np.save(paths["ids"], np.arange(30, dtype=np.int64) + 500)
    paths["index"] = tmp_path / "g.dehub"
    return paths, (gallery, reference, queries)


def _build(paths, *extra):
    return main(
        [
            "build",
            "--gallery",
            str(paths["gallery"]),
            "--reference",
            str(paths["reference"]),
            "--ids",
            str(paths["ids"]),
            "-o",
            str(paths["index"]),
            "--k",
            "5",
            "--alpha",
            "0.6",
            *extra,
        ]
    )


def test_build_search_info_end_to_end(files, tmp_path, capsys, digest):
    paths, (gallery, reference, queries) = files
    before = digest(*(np.load(paths[n]) for n in ("gallery", "reference", "queries", "ids")))
    assert _build(paths) == 0
    out = capsys.readouterr().out
    assert f"wrote {paths['index']}: 30 items, d=8" in out

    index = Index.load(paths["index"])
    assert (index.model.k, index.model.alpha) == (5, 0.6)
    np.testing.assert_array_equal(index.ids, np.arange(30) + 500)
    assert index.metadata["gallery_file"] == str(paths["gallery"])

    result = tmp_path / "res.npz"
    assert (
        main(
            [
                "search",
                str(paths["index"]),
                "--queries",
                str(paths["queries"]),
                "--top",
                "7",
                "-o",
                str(result),
            ]
        )
        == 0
    )
    assert "scores and ids of shape (6, 7)" in capsys.readouterr().out
    with np.load(result) as got:
        scores, ids = got["scores"], got["ids"]
    rs, ri, dense = ref_nnn_search(queries, gallery, reference, 5, 0.6, 7)
    assert_topk_match(scores, ids - 500, rs, ri, dense, atol=1e-5)

    # Printed results: one line per query, "id:score" pairs best first.
    assert main(["search", str(paths["index"]), "--queries", str(paths["queries"]), "--top", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6
    first = lines[0].split("\t")
    assert first[0] == "0"
    pairs = [p.split(":") for p in first[1].split()]
    assert [int(i) for i, _ in pairs] == ids[0, :3].tolist()
    np.testing.assert_allclose([float(s) for _, s in pairs], scores[0, :3], atol=1e-4)

    assert main(["info", str(paths["index"])]) == 0
    info = capsys.readouterr().out
    assert "format:   version 1" in info and "method:   nnn" in info and '"k": 5' in info
    assert "gallery" in info and "(30, 8)" in info
    assert main(["info", "--json", str(paths["index"])]) == 0
    assert '"kind": "dehub.index"' in capsys.readouterr().out

    assert digest(*(np.load(paths[n]) for n in ("gallery", "reference", "queries", "ids"))) == before


def test_search_alpha_override_and_mmap(files, tmp_path, capsys):
    paths, (gallery, reference, queries) = files
    assert _build(paths) == 0
    result = tmp_path / "res.npz"
    assert (
        main(
            [
                "search",
                str(paths["index"]),
                "--queries",
                str(paths["queries"]),
                "--top",
                "40",
                "--alpha",
                "0",
                "--mmap",
                "-o",
                str(result),
            ]
        )
        == 0
    )
    with np.load(result) as got:
        scores, ids = got["scores"], got["ids"]
    assert np.all(ids[:, 30:] == -1)  # 40 > 30 items: padded
    rs, ri, dense = ref_nnn_search(queries, gallery, reference, 5, 0.0, 40)
    assert_topk_match(scores, np.where(ids >= 0, ids - 500, -1), rs, ri, dense, atol=1e-5)
    assert Index.load(paths["index"]).model.alpha == 0.6, "a search override is not saved"


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "dehub build --gallery" in out and "dehub search" in out
    for command in ("build", "search", "info"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "examples:" in capsys.readouterr().out
    assert "build" in build_parser().format_help()


def test_missing_input_file(files, capsys):
    paths, _ = files
    code = main(
        [
            "build",
            "--gallery",
            "/nonexistent/g.npy",
            "--reference",
            str(paths["reference"]),
            "-o",
            str(paths["index"]),
        ]
    )
    assert code == 2
    assert "dehub: gallery file not found: /nonexistent/g.npy" in capsys.readouterr().err
    assert not paths["index"].exists()


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "is not a plain numeric .npy array"),
        (b"this is not numpy at all", "is not a plain numeric .npy array"),
        ("npz", "is an .npz archive; expected a single .npy array"),
        ("object", "is not a plain numeric .npy array"),
        ("int", "gallery must hold float16, float32 or float64 values; received dtype int64"),
        ("nan", "gallery contains NaN or infinite values"),
        ("1d", "gallery must be 2-D with shape (n, d)"),
    ],
)
def test_bad_gallery_file_exits_2_with_a_clear_message(files, capsys, content, match):
    paths, (gallery, _, _) = files
    bad = paths["gallery"].with_name("bad.npy")
    if content == "npz":
        bad = bad.with_name("bad.npz")
        np.savez(bad, gallery=gallery)
    elif content == "object":
        np.save(bad, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif content == "int":
        np.save(bad, np.ones((3, 8), np.int64))
    elif content == "nan":
        g = gallery.copy()
        g[3, 3] = np.nan
        np.save(bad, g)
    elif content == "1d":
        np.save(bad, gallery[0])
    else:
        bad.write_bytes(content)
    code = main(
        ["build", "--gallery", str(bad), "--reference", str(paths["reference"]), "-o", str(paths["index"])]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert match in err
    assert "Traceback" not in err
    assert not paths["index"].exists()


def test_k_larger_than_reference_exits_2(files, capsys):
    paths, _ = files
    code = _build(paths, "--k", "500")
    assert code == 2
    assert "k=500 exceeds the number of reference items (70)" in capsys.readouterr().err


def test_dimension_mismatch_on_search_exits_2(files, tmp_path, capsys, rng, unit):
    paths, _ = files
    assert _build(paths) == 0
    np.save(tmp_path / "q5.npy", unit(rng, 3, 5))
    code = main(["search", str(paths["index"]), "--queries", str(tmp_path / "q5.npy")])
    assert code == 2
    assert "received queries.shape[1]=5 and gallery.shape[1]=8" in capsys.readouterr().err


def test_corrupt_or_missing_index_exits_2(files, capsys):
    paths, _ = files
    assert _build(paths) == 0
    raw = bytearray(paths["index"].read_bytes())
    raw[-3] ^= 0xFF
    paths["index"].write_bytes(bytes(raw))
    assert main(["search", str(paths["index"]), "--queries", str(paths["queries"])]) == 2
    assert "checksum mismatch in array" in capsys.readouterr().err
    assert main(["info", str(paths["gallery"])]) == 2
    assert "not a dehub index file" in capsys.readouterr().err
    assert main(["info", str(paths["index"]) + ".missing"]) == 2
    assert "no index file at" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["build", "--gallery", "x.npy"])  # --reference and -o missing
    assert info.value.code == 2
    assert "required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_unknown_method_exits_2(files, capsys):
    paths, _ = files
    assert _build(paths, "--method", "magic") == 2
    assert "unknown method 'magic'" in capsys.readouterr().err


def test_unnormalized_input_warns_and_l2_option(files, tmp_path, capsys):
    paths, (gallery, _, _) = files
    np.save(paths["gallery"], gallery * 3)
    with pytest.warns(UserWarning, match="not unit-norm.*normalize='l2'"):
        assert _build(paths) == 0
    assert _build(paths, "--normalize", "l2") == 0
    np.testing.assert_allclose(
        np.linalg.norm(Index.load(paths["index"]).model.gallery_, axis=1), 1, atol=1e-6
    )
    assert _build(paths, "--normalize", "error") == 2
    assert "not unit-norm" in capsys.readouterr().err
