"""dehub embed: the clip-retrieval layout, resumability, encoders (MiniLM, ONNX, open_clip)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _texts(wordnet_text, n=200):
    return wordnet_text["test"]["definition"][:n]


def test_minilm_equals_the_bundled_encoder(minilm, wordnet_text):
    from dehub.datasets.encoder import embed_texts

    texts = _texts(wordnet_text, 40)
    got = minilm.encode_texts(texts, 16)
    want = embed_texts(texts, progress=False)
    assert got.shape == (40, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_embed_writes_clip_retrieval_layout(minilm, wordnet_text, tmp_path):
    from dehub.datasets.layouts import read_embeddings
    from dehub.embed import embed

    texts = _texts(wordnet_text, 25)
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    res = embed(tmp_path / "in.txt", tmp_path / "out", encoder=minilm, shard_size=10, progress=False)
    assert (res.n_items, res.dim, res.shards_written, res.shards_skipped) == (25, 384, 3, 0)
    names = sorted(p.name for p in (tmp_path / "out" / "text_emb").iterdir())
    assert names == ["text_emb_00000.npy", "text_emb_00001.npy", "text_emb_00002.npy"]
    assert np.load(tmp_path / "out" / "text_emb" / "text_emb_00002.npy").shape == (5, 384)
    meta = pq.read_table(tmp_path / "out" / "metadata" / "metadata_00001.parquet")
    assert meta.column_names == ["id", "text"] and meta["id"].to_pylist() == list(range(10, 20))
    assert meta["text"].to_pylist() == texts[10:20]
    emb, allmeta = read_embeddings(tmp_path / "out")
    np.testing.assert_allclose(np.asarray(emb), minilm.encode_texts(texts), atol=1e-5)
    assert allmeta["text"].to_pylist() == texts


class _Interrupting:
    """Wraps a real encoder; raises KeyboardInterrupt on the n-th call (a killed run)."""

    def __init__(self, enc, fail_on_call):
        self.enc, self.fail_on_call, self.calls = enc, fail_on_call, 0
        self.name, self.dim, self.modalities = enc.name, enc.dim, enc.modalities

    def encode_texts(self, texts, batch_size=64):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        return self.enc.encode_texts(texts, batch_size)


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted(minilm, wordnet_text, tmp_path):
    from dehub.embed import embed

    texts = _texts(wordnet_text, 35)
    (tmp_path / "in.txt").write_text("\n".join(texts), encoding="utf-8")
    kw = {"shard_size": 10, "batch_size": 5, "progress": False}
    full = embed(tmp_path / "in.txt", tmp_path / "full", encoder=minilm, **kw)
    assert full.shards_written == 4
    flaky = _Interrupting(minilm, fail_on_call=4)  # shard 0 = calls 1-2, dies in shard 1
    with pytest.raises(KeyboardInterrupt):
        embed(tmp_path / "in.txt", tmp_path / "part", encoder=flaky, **kw)
    done = sorted(p.name for p in (tmp_path / "part" / "text_emb").iterdir())
    assert done == ["text_emb_00000.npy"]  # the shard being encoded is lost, nothing else
    assert not [p for p in (tmp_path / "part").rglob("*.tmp")]
    counting = _Interrupting(minilm, fail_on_call=-1)
    res = embed(tmp_path / "in.txt", tmp_path / "part", encoder=counting, **kw)
    assert (res.shards_written, res.shards_skipped) == (3, 1)
    assert counting.calls == 5  # shards 1..3 only (2 + 2 + 1 batches of 5)
    for name in [f"text_emb_{i:05d}.npy" for i in range(4)]:
        np.testing.assert_array_equal(
            np.load(tmp_path / "part" / "text_emb" / name), np.load(tmp_path / "full" / "text_emb" / name)
        )
    for i in range(4):
        a = pq.read_table(tmp_path / "part" / "metadata" / f"metadata_{i:05d}.parquet")
        assert a.equals(pq.read_table(tmp_path / "full" / "metadata" / f"metadata_{i:05d}.parquet"))


def test_resume_with_other_settings_is_refused(minilm, wordnet_text, tmp_path):
    from dehub.embed import embed

    (tmp_path / "in.txt").write_text("\n".join(_texts(wordnet_text, 10)), encoding="utf-8")
    embed(tmp_path / "in.txt", tmp_path / "out", encoder=minilm, shard_size=5, progress=False)
    with pytest.raises(ValueError, match="shard_size: 5 != 4"):
        embed(tmp_path / "in.txt", tmp_path / "out", encoder=minilm, shard_size=4, progress=False)
    (tmp_path / "in.txt").write_text("\n".join(_texts(wordnet_text, 11)), encoding="utf-8")
    with pytest.raises(ValueError, match="input_sha256"):
        embed(tmp_path / "in.txt", tmp_path / "out", encoder=minilm, shard_size=5, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not written by dehub embed"):
        embed(tmp_path / "in.txt", tmp_path / "other", encoder=minilm, progress=False)
    assert (tmp_path / "other" / "precious.txt").read_text() == "keep"


def test_inputs_jsonl_parquet_images(tmp_path):
    from dehub.embed import read_inputs

    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n\n{"text": "y", "other": 1}\n')
    # other scalar fields travel as metadata columns (missing values: None)
    assert read_inputs(tmp_path / "a.jsonl") == ("text", ["x", "y"], {"text": ["x", "y"], "other": [None, 1]})
    pq.write_table(
        pa.table({"caption": ["p", "q"], "url": ["u1", "u2"], "emb": [[1.0], [2.0]]}), tmp_path / "b.parquet"
    )
    assert read_inputs(tmp_path / "b.parquet")[1:] == (["p", "q"], {"text": ["p", "q"], "url": ["u1", "u2"]})
    (tmp_path / "bad.jsonl").write_text('{"txt": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: expected an object with a 'text' field"):
        read_inputs(tmp_path / "bad.jsonl")
    PIL = pytest.importorskip("PIL.Image")
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for i, name in enumerate(["b.png", "a.jpg", "sub/c.png"]):
        PIL.new("RGB", (4, 4), (i * 80, 0, 0)).save(tmp_path / "imgs" / name)
    kind, items, meta = read_inputs(tmp_path / "imgs")
    assert kind == "image" and [p.rsplit("/", 1)[-1] for p in items] == ["a.jpg", "b.png", "c.png"]
    assert meta == {"path": items}
    (tmp_path / "urls.txt").write_text("http://example.org/1.jpg\nhttp://example.org/2.jpg\n")
    assert read_inputs(tmp_path / "urls.txt", kind="image")[2] == {
        "url": ["http://example.org/1.jpg", "http://example.org/2.jpg"]
    }


class _MeanColour:
    """A deterministic image encoder for the layout test: the mean RGB of the picture."""

    name, dim, modalities = "mean-colour", 3, frozenset({"image"})

    def encode_images(self, images, batch_size=32):
        from dehub.embed.encoders import _normalize, _open_image

        return _normalize(np.stack([np.asarray(_open_image(p), np.float32).mean((0, 1)) + 1 for p in images]))


def test_image_folder_layout(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    from dehub.datasets.layouts import read_embeddings
    from dehub.embed import embed

    (tmp_path / "imgs").mkdir()
    for i in range(5):
        PIL.new("RGB", (4, 4), (i * 50, 10, 0)).save(tmp_path / "imgs" / f"{i}.png")
    res = embed(tmp_path / "imgs", tmp_path / "out", encoder=_MeanColour(), shard_size=2, progress=False)
    assert res.kind == "image" and res.shards_written == 3
    emb, meta = read_embeddings(tmp_path / "out")
    assert emb.shape == (5, 3) and meta.column_names == ["id", "path"]
    assert meta["path"].to_pylist()[3].endswith("3.png")
    with pytest.raises(ValueError, match="not images"):
        embed(
            tmp_path / "imgs",
            tmp_path / "out2",
            encoder=type("T", (), {"name": "t", "dim": 2, "modalities": frozenset({"text"})})(),
            progress=False,
        )


def test_fp16_on_cpu_warns_and_runs_float32(wordnet_text):
    pytest.importorskip("sentence_transformers")
    from dehub.embed import get_encoder

    with pytest.warns(UserWarning, match="fp16 needs a CUDA device"):
        enc = get_encoder(None, fp16=True)
    assert enc.encode_texts(["a"]).dtype == np.float32


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx", reason="torch.onnx.export needs the onnx package (extra 'onnx')")
    pytest.importorskip("transformers")
    from dehub.embed import export_onnx

    return export_onnx(tmp_path_factory.mktemp("onnx"))


@pytest.mark.slow
def test_onnx_encoder_equals_sentence_transformers(onnx_dir, minilm, wordnet_text):
    from dehub.embed import OnnxEncoder

    texts = _texts(wordnet_text, 24) + ["", "a " * 300]  # empty and truncated (> 256 tokens)
    got = OnnxEncoder(onnx_dir).encode_texts(texts, 16)
    want = minilm.encode_texts(texts, 16)
    err = float(np.abs(got - want).max())
    cos = float(np.min(np.sum(got * want, axis=1)))
    print(f"ONNX vs sentence-transformers: max |diff| {err:.2e}, min cosine {cos:.8f}")
    assert err < 1e-5 and cos > 0.99999


@pytest.mark.slow
def test_onnx_encoder_runs_without_torch(onnx_dir, wordnet_text, tmp_path):
    code = (
        "import sys, json\n"
        "sys.modules['torch'] = None  # any torch import fails\n"
        "from dehub.embed import OnnxEncoder\n"
        f"e = OnnxEncoder({str(onnx_dir)!r})\n"
        "x = e.encode_texts(['a cat', 'a dog'])\n"
        "print(json.dumps([x.shape[0], x.shape[1], e.name]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [
        2,
        384,
        "onnx:sentence-transformers/all-MiniLM-L6-v2",
    ]


def _open_clip_or_skip():
    try:
        import open_clip  # noqa: F401
    except ImportError as exc:
        pytest.skip(
            f"open_clip does not import here ({exc}): open_clip imports torchvision, and no torchvision "
            "wheel works beside this CPU torch 2.13 (PyPI's torchvision 0.28.0 pins torch 2.13 but links "
            "libc10_cuda.so/libtorch_cuda.so; 0.29.x needs torch 2.14). The encoder code path is kept."
        )


def test_open_clip_random_weights_texts_and_images(tmp_path):
    _open_clip_or_skip()
    PIL = pytest.importorskip("PIL.Image")
    from dehub.embed import embed, get_encoder

    enc = get_encoder("open_clip:ViT-B-32")  # pretrained=None: random weights, no download
    t = enc.encode_texts(["a photo of a cat", "a dog"])
    assert t.shape == (2, enc.dim) and np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    (tmp_path / "imgs").mkdir()
    PIL.new("RGB", (64, 48), (200, 10, 10)).save(tmp_path / "imgs" / "0.png")
    res = embed(tmp_path / "imgs", tmp_path / "out", encoder=enc, progress=False)
    assert res.kind == "image" and np.load(tmp_path / "out" / "img_emb" / "img_emb_0.npy").shape == (
        1,
        enc.dim,
    )


def test_jsonl_input_nested_100k_deep_is_a_clear_cli_error(tmp_path, capsys):
    """Before: RecursionError traceback from json.loads on one line of the input."""
    from dehub.cli import main

    (tmp_path / "deep.jsonl").write_text('{"text": "a"}\n{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    assert main(["embed", str(tmp_path / "deep.jsonl"), "-o", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "deep.jsonl:2: JSON nested 100001 levels deep; expected at most 32 levels" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_bad_rerun_refused_and_finished_rerun_skipped_before_any_model_loads(
    wordnet_text, tmp_path, monkeypatch
):
    """A rerun with other settings is refused, and a rerun with nothing left to encode
    returns, without loading the encoder (loading MiniLM took ~100 s on a busy machine)."""
    import dehub.embed.writer as writer
    from dehub.embed import embed

    class _Tiny:
        name, dim, modalities = "sentence-transformers/all-MiniLM-L6-v2", 4, frozenset({"text"})

        def encode_texts(self, texts, batch_size=64):
            return np.ones((len(texts), 4), np.float32) / 2

    (tmp_path / "in.txt").write_text("\n".join(_texts(wordnet_text, 12)), encoding="utf-8")
    embed(tmp_path / "in.txt", tmp_path / "out", encoder=_Tiny(), shard_size=5, progress=False)

    def no_model(*a, **k):
        raise AssertionError("the encoder was loaded")

    monkeypatch.setattr(writer, "get_encoder", no_model)
    with pytest.raises(ValueError, match="shard_size: 5 != 4"):
        embed(tmp_path / "in.txt", tmp_path / "out", shard_size=4, progress=False)
    res = embed(tmp_path / "in.txt", tmp_path / "out", shard_size=5, progress=False)
    assert (res.shards_written, res.shards_skipped, res.dim) == (0, 3, 4)


def test_resumed_run_counts_only_new_rows_in_its_rate(minilm, wordnet_text, tmp_path, monkeypatch):
    """The progress bar of a resumed run covers the rows still to encode (its rate and ETA
    are about new work), not the finished shards."""
    import contextlib

    import dehub.embed.writer as writer
    from dehub.embed import embed

    texts = _texts(wordnet_text, 23)
    (tmp_path / "in.txt").write_text("\n".join(texts), encoding="utf-8")
    embed(tmp_path / "in.txt", tmp_path / "out", encoder=minilm, shard_size=10, progress=False)
    (tmp_path / "out" / "text_emb" / "text_emb_00002.npy").unlink()  # the last shard (3 rows) lost
    seen = []

    @contextlib.contextmanager
    def bar(total, desc, enable, unit="it"):
        class _Bar:
            n = 0

            def update(self, k):
                self.n += k

        b = _Bar()
        yield b
        seen.append((total, b.n))

    monkeypatch.setattr(writer, "progress_bar", bar)
    res = embed(tmp_path / "in.txt", tmp_path / "out", encoder=minilm, shard_size=10, progress=True)
    assert (res.shards_written, res.shards_skipped) == (1, 2)
    assert seen == [(3, 3)]
