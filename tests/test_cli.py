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
    assert ids.shape == (6, 30)  # --top 40 > 30 items: clamped, with a warning
    err = capsys.readouterr().err  # one clamp (the library's), in the command line's words
    assert "dehub: warning: --top 40 exceeds the 30 gallery items; returning 30 results per query" in err
    assert err.count("exceeds") == 1 and "k=" not in err
    rs, ri, dense = ref_nnn_search(queries, gallery, reference, 5, 0.0, 30)
    assert_topk_match(scores, np.where(ids >= 0, ids - 500, -1), rs, ri, dense, atol=1e-5)
    assert Index.load(paths["index"]).model.alpha == 0.6, "a search override is not saved"


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "dehub build --gallery" in out and "dehub search" in out
    for command in ("build", "search", "info", "add", "remove", "eval"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        # each subcommand shows its own examples, not the top-level list
        examples = out.split("examples:", 1)[1]
        assert f"dehub {command} " in examples or examples.strip().startswith(f"dehub {command}")
        others = {"build", "search", "info", "add", "remove", "eval"} - {command}
        assert not any(f"  dehub {o} " in examples for o in others), (command, examples)
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
    assert "dehub: error: gallery file not found: /nonexistent/g.npy" in capsys.readouterr().err
    assert not paths["index"].exists()


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "is not a .npy array (an empty file)"),
        (b"this is not numpy at all", "is not a .npy array (a file beginning with b'this is "),
        (b"0.1,0.2,0.3\n0.4,0.5,0.6\n", "text or CSV files are not read as arrays"),
        ("npz", "is an .npz archive; expected a single .npy array"),
        ("object", "holds Python objects (an object-dtype array), not numbers"),
        ("int", "must hold a 2-D float array (n, d); received shape (3, 8), dtype int64"),
        ("nan", "gallery contains NaN or infinite values"),
        ("1d", "must hold a 2-D float array (n, d); received shape (8,)"),
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
    assert "Traceback" not in err and "allow_pickle" not in err
    assert len(err.strip().splitlines()) == 1, err
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
    assert "index file not found" in capsys.readouterr().err


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
    assert _build(paths) == 0
    err = capsys.readouterr().err
    # the warning speaks the CLI's language
    assert "dehub: warning: gallery rows are not unit-norm" in err and "--normalize l2" in err
    assert "normalize='l2'" not in err
    assert _build(paths, "--normalize", "l2", "--quiet") == 0
    np.testing.assert_allclose(
        np.linalg.norm(Index.load(paths["index"]).model.gallery_, axis=1), 1, atol=1e-6
    )
    assert _build(paths, "--normalize", "error") == 2
    assert "not unit-norm" in capsys.readouterr().err


# ---------------------------------------------------------------- the careless user
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _dehub(args, *, env_path=None, cwd=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*(env_path or []), SRC, env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "dehub.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture
def world(files, tmp_path):
    """An index, plain/eval files, a text file posing as an array, a fake FAISS-less path."""
    paths, (gallery, reference, queries) = files
    assert _build(paths) == 0
    text = tmp_path / "emb.txt"
    text.write_text("0.1 0.2 0.3\n0.4 0.5 0.6\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    nofaiss = tmp_path / "nofaiss"
    nofaiss.mkdir()
    (nofaiss / "faiss.py").write_text("raise ImportError(\"No module named 'faiss'\")\n")
    q5 = queries[:, :5] / np.linalg.norm(queries[:, :5], axis=1, keepdims=True)
    np.save(tmp_path / "q5.npy", q5.astype(np.float32))
    # a file benchmark whose validation split is a copy of the test files
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("query_id,gallery_id\n" + "".join(f"{i},{i % 30}\n" for i in range(6)))
    vq, vg = reference[:6], reference[40:70]
    for name, arr in {"tq": queries, "tg": gallery, "vq": vq, "vg": vg, "rr": reference[6:40]}.items():
        np.save(tmp_path / f"{name}.npy", arr)
    return paths, tmp_path, nofaiss


def _eval_files(t, **over):
    spec = {
        "--queries": t / "tq.npy",
        "--gallery": t / "tg.npy",
        "--pairs": t / "pairs.csv",
        "--reference": t / "rr.npy",
        "--val-queries": t / "vq.npy",
        "--val-gallery": t / "vg.npy",
        "--val-pairs": t / "pairs.csv",
    }
    spec.update(over)
    return [x for kv in spec.items() for x in kv]


@pytest.mark.slow  # ~30 subprocesses
def test_bad_invocations_exit_2_with_one_line_and_no_traceback(world):
    paths, t, nofaiss = world
    idx, g, r, q = paths["index"], paths["gallery"], paths["reference"], paths["queries"]
    build = ["build", "--gallery", g, "--reference", r, "-o", t / "new.dehub"]
    corrupt = t / "corrupt.dehub"
    raw = bytearray(idx.read_bytes())
    raw[-3] ^= 0xFF
    corrupt.write_bytes(bytes(raw))
    cases = [
        (
            [*build, "--method", "csls", "--alpha", "0.5"],
            "--alpha does not apply to method 'csls'; its options are: --k",
        ),
        ([*build, "--method", "nnn", "--beta", "3"], "--beta does not apply to method 'nnn'"),
        ([*build, "--method", "csls", "--engine", "ivf"], "--engine does not apply to method 'csls'"),
        (["build", "--gallery", t / "emb.txt", "--reference", r, "-o", t / "x"], "is not a .npy array"),
        (["build", "--gallery", g, "--reference", r, "-o", t / "adir"], "is a directory"),
        (["build", "--gallery", g, "--reference", r], "the following arguments are required: -o/--output"),
        (
            ["build", "--gallery", g, "--reference", r, "-o", t / "x", "--engine-params", "{"],
            "expected a JSON object",
        ),
        (["search", idx, "--queries", q, "--top", "0"], "argument --top: expected a positive integer"),
        (["search", idx, "--queries", q, "-o", t / "adir"], f"-o {t / 'adir'} is a directory"),
        (["search", idx, "--queries", t / "emb.txt"], "text or CSV files are not read as arrays"),
        (["search", idx, "--queries", t / "q5.npy"], "same embedding dimension"),
        (
            ["search", t / "adir", "--queries", q],
            "is a directory without manifest.json; expected an index file",
        ),
        (["info", t / "missing.dehub"], "index file not found"),
        (["info", corrupt, "--verify"], "checksum mismatch"),
        (["remove", idx, "--ids", "10.9"], "expected exact integer ids"),
        (["remove", idx, "--ids", "99999"], "not in the index"),
        (["add", idx, "--vectors", t / "q5.npy", "--reference", r], "same embedding dimension"),
        (["add", idx, "--vectors", q], "needs the reference set"),
        (["eval", "--seed", "-1"], "argument --seed: expected a non-negative integer"),
        (["eval", "--n-bootstrap", "0"], "argument --n-bootstrap: expected a positive integer"),
        (["eval", "--params", "k=16"], "argument --params: expected a JSON object"),
        (
            ["eval", "--methods", "nnn", "--params", '{"k": 16, "alfa": 0.7}'],
            "no method in --methods nnn has the parameter 'alfa'; their parameters are alpha, engine",
        ),
        (
            ["eval", "--methods", "plain,csls", "--params", '{"alpha": 0.5}'],
            "no method in --methods plain,csls has the parameter 'alpha'",
        ),
        (["eval", "--methods", "nnn,magic"], "unknown --methods ['magic']"),
        (["eval", "-o", t / "afile"], "is a file; expected a directory"),
        (
            ["eval", *_eval_files(t), "--metric", "R@3", "--no-plots"],
            "unknown validation metric --metric 'R@3'",
        ),
        (
            ["eval", *_eval_files(t, **{"--val-queries": t / "tq.npy"})],
            "the validation queries and the test queries share 6 identical rows",
        ),
        (
            ["eval", *_eval_files(t, **{"--reference": t / "tq.npy"})],
            "the reference set and the test queries share 6 identical rows",
        ),
        (
            ["eval", *_eval_files(t, **{"--gallery": t / "emb.txt"})],
            "text or CSV files are not read as arrays",
        ),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ]

    def one(case):
        args, match = case
        return case, _dehub(args)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, cases))
    hnsw = _dehub([*build, "--engine", "hnsw"], env_path=[str(nofaiss)])
    results.append((([*build, "--engine", "hnsw"], "needs FAISS, which is not installed"), hnsw))
    failures = []
    for (args, match), res in results:
        err = res.stderr
        ok = res.returncode == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
        if not (ok and match in err):
            failures.append((" ".join(map(str, args))[-90:], res.returncode, match, err.strip()[-400:]))
    assert not failures, "\n".join(map(repr, failures))
    assert "pip install dehub[" not in hnsw.stderr


def test_closed_pipe_ends_quietly(world, rng, unit):
    paths, t, _ = world
    np.save(t / "many.npy", unit(rng, 4000, 8))
    env = dict(os.environ, PYTHONPATH=SRC)
    cmd = (
        f"set -o pipefail; {sys.executable} -m dehub.cli search {paths['index']} "
        f"--queries {t / 'many.npy'} --top 20 --quiet | head -n 2"
    )
    res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 2
    assert "Broken pipe" not in res.stderr and "BrokenPipeError" not in res.stderr, res.stderr


def test_add_remove_info_verify_and_search_query_ids(world, rng, unit, capsys):
    paths, t, _ = world
    idx = paths["index"]
    new = unit(rng, 4, 8)
    np.save(t / "new.npy", new)
    np.save(t / "new_ids.npy", np.array([900, 901, 902, 903]))
    assert (
        main(
            [
                "add",
                str(idx),
                "--vectors",
                str(t / "new.npy"),
                "--ids",
                str(t / "new_ids.npy"),
                "--reference",
                str(paths["reference"]),
                "-o",
                str(t / "v2.dehub"),
            ]
        )
        == 0
    )
    assert "added 4 items, 34 in all" in capsys.readouterr().out
    v2 = Index.load(t / "v2.dehub")
    assert v2.ids[-4:].tolist() == [900, 901, 902, 903]
    assert Index.load(idx).n_items == 30, "without -o the source is untouched only when -o is given"
    # the added items are found by their own vectors
    (t / "qids.txt").write_text("a\nb\nc\nd\n")
    assert (
        main(
            [
                "search",
                str(t / "v2.dehub"),
                "--queries",
                str(t / "new.npy"),
                "--top",
                "1",
                "--query-ids",
                str(t / "qids.txt"),
                "-o",
                str(t / "res.npz"),
            ]
        )
        == 0
    )
    with np.load(t / "res.npz") as res:
        assert res["query_ids"].tolist() == ["a", "b", "c", "d"]
        assert res["ids"][:, 0].tolist() == [900, 901, 902, 903]
    capsys.readouterr()
    assert (
        main(
            [
                "search",
                str(t / "v2.dehub"),
                "--queries",
                str(t / "new.npy"),
                "--top",
                "1",
                "--query-ids",
                str(t / "qids.txt"),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.splitlines()[1].startswith("b\t901:")
    (t / "rm.txt").write_text("900\n902\n")
    assert main(["remove", str(t / "v2.dehub"), "--ids", str(t / "rm.txt")]) == 0
    assert "removed 2 items, 32 left" in capsys.readouterr().out
    assert main(["remove", str(t / "v2.dehub"), "--ids", "901,903"]) == 0
    assert Index.load(t / "v2.dehub").n_items == 30
    assert main(["info", str(t / "v2.dehub"), "--verify"]) == 0
    assert "verified: every checksum and the content are valid (30 items, d=8, " in capsys.readouterr().out


def _eval_data(t, rng, scale=1.0):
    """Synthetic one-direction eval files: 40 items, 2 noisy queries each, a disjoint reference."""

    def split(n, seed_shift):
        items = rng.normal(size=(n, 16))
        queries = np.repeat(items, 2, axis=0) + 0.8 * rng.normal(size=(2 * n, 16))
        return (queries * scale).astype(np.float32), (items * scale).astype(np.float32)

    tq, tg = split(40, 0)
    vq, vg = split(40, 1)
    ref, _ = split(100, 2)
    pairs = "query_id,gallery_id\n" + "".join(f"{i},{i // 2}\n" for i in range(80))
    (t / "ep.csv").write_text(pairs)
    for name, arr in {"etq": tq, "etg": tg, "evq": vq, "evg": vg}.items():
        np.save(t / f"{name}.npy", arr)
    shards = t / "ref_shards"
    shards.mkdir()
    np.save(shards / "emb_0.npy", ref[:60])
    np.save(shards / "emb_1.npy", ref[60:])
    return [
        "--queries",
        t / "etq.npy",
        "--gallery",
        t / "etg.npy",
        "--pairs",
        t / "ep.csv",
        "--reference",
        shards,
        "--val-queries",
        t / "evq.npy",
        "--val-gallery",
        t / "evg.npy",
        "--val-pairs",
        t / "ep.csv",
        "--n-bootstrap",
        "50",
        "--no-plots",
    ]


def test_eval_quiet_keeps_warnings_normalize_params_overlap_and_shards(tmp_path, rng):
    t = tmp_path
    args = [*_eval_data(t, rng, scale=3.0), "--methods", "plain,nnn"]
    # --quiet hides progress only: the unit-norm warning is shown, in CLI words
    res = _dehub(["eval", *args, "--quiet", "-o", t / "r1"])
    assert res.returncode == 0, res.stderr
    assert "not unit-norm" in res.stderr and "--normalize l2" in res.stderr
    assert "normalize='l2'" not in res.stderr and "validation sweep" not in res.stderr
    assert "Traceback" not in res.stderr
    # --normalize l2: no warning; a fixed setting (no sweep) from --params
    res = _dehub(
        [
            "eval",
            *args,
            "--quiet",
            "--normalize",
            "l2",
            "--params",
            '{"nnn": {"k": 4, "alpha": 0.5}}',
            "-o",
            t / "r2",
        ]
    )
    assert res.returncode == 0, res.stderr
    assert "not unit-norm" not in res.stderr
    data = json.loads((t / "r2" / "report.json").read_text())
    nnn = data["directions"]["a2b"]["methods"]["nnn"]
    assert nnn["chosen_params"] == {"k": 4, "alpha": 0.5} and nnn["sweep"]["n_settings"] == 1
    assert data["settings"]["normalize"] == "l2" and data["settings"]["fixed_params"]["nnn"] == {
        "k": 4,
        "alpha": 0.5,
    }
    assert "k=4, alpha=0.5 (fixed)" in (t / "r2" / "report.md").read_text()
    # validation = copies of the test files: an error, unless --allow-overlap
    copy = [*args]
    copy[copy.index("--val-queries") + 1] = t / "etq.npy"
    res = _dehub(["eval", *copy, "--quiet", "-o", t / "r3"])
    assert res.returncode == 2 and "share 80 identical rows" in res.stderr and "--allow-overlap" in res.stderr
    res = _dehub(["eval", *copy, "--quiet", "--allow-overlap", "-o", t / "r3"])
    assert res.returncode == 0, res.stderr
    assert "share 80 identical rows" in res.stderr  # still said, as a warning


def test_info_escapes_hostile_header_text_and_verify_reports_bytes(tmp_path, capsys):
    """A header's strings reach the terminal as printable text, never as escape codes."""
    from crafted_index import craft, index_header

    g = np.eye(4, dtype=np.float32)
    path = craft(
        tmp_path / "hostile.dehub",
        index_header("plain", created_by="evil\x1b[2J\x07"),
        [("gallery", g), ("ids", np.arange(4, dtype=np.int64))],
    )
    assert main(["info", str(path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "evil\\x1b[2J\\x07" in out
    assert "4 items, d=4" in out and "bytes hashed" in out
