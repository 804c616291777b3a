"""The measured choices' cache (``dehub.engine.tuning``): read once per process and file
version, and reported (``dehub info``, the evaluation report, the service's ``/info``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dehub.engine import tuning


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEHUB_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("DEHUB_TUNING", raising=False)
    return tmp_path / "tuning.json"


def _shape(d=512, nd=118000, k=128, nq=5000, offset=False):
    return tuning.shape_class(
        "precision", d=d, dtype=np.float32, k=k, n_queries=nq, n_database=nd, offset=offset, device="cpu"
    )


def test_cached_choice_parses_the_file_once_per_version(cache, monkeypatch):
    shape = _shape()
    tuning.record_choice(shape, "bf16", {"bf16_over_fp32": 0.41})
    reads = []
    real = json.loads
    monkeypatch.setattr(tuning.json, "loads", lambda text: reads.append(1) or real(text))
    for _ in range(50):
        assert tuning.cached_choice(shape)["choice"] == "bf16"
    assert len(reads) <= 1
    # another process (or this one) records a new choice: a new version of the file is read
    tuning.record_choice(shape, "fp32", {"bf16_over_fp32": 0.97})
    n = len(reads)
    assert tuning.cached_choice(shape)["choice"] == "fp32"
    assert len(reads) == n + 1
    # a caller changing what it got does not change the cache
    got = tuning.cached_choice(shape)
    got["choice"] = "tampered"
    assert tuning.cached_choice(shape)["choice"] == "fp32"
    assert tuning.reset_tuning() == 1
    assert tuning.cached_choice(shape) is None


def test_the_cache_file_changed_by_hand_is_seen(cache):
    shape = _shape()
    tuning.record_choice(shape, "bf16", {"bf16_over_fp32": 0.41})
    assert tuning.cached_choice(shape)["choice"] == "bf16"
    cache.unlink()
    assert tuning.cached_choice(shape) is None


def test_parse_shape_class_inverts_shape_class():
    f = tuning.parse_shape_class(_shape(d=384, nd=5000, k=10, nq=3, offset=True))
    assert f == {
        "kind": "precision",
        "device": "cpu",
        "dtype": "float32",
        "d": 384,
        "k": 16,
        "nq": 4,
        "nd": 16384,
        "offset": True,
    }
    assert tuning.parse_shape_class("something:else") == {}


def test_auto_choices_and_lines_for_an_index(cache):
    tuning.record_choice(_shape(d=512, nd=118000), "bf16", {"bf16_over_fp32": 0.42})
    tuning.record_choice(_shape(d=512, nd=5000, k=10, offset=True), "fp32", {"bf16_over_fp32": 0.95})
    tuning.record_choice(_shape(d=384, nd=118000), "bf16", {"bf16_over_fp32": 0.5})
    tuning.record_choice(_shape(d=512).replace("precision:", "other:", 1), "x", {})  # another kind of choice
    report = tuning.tuning_report()
    assert len(report["choices"]) == 4
    assert len(tuning.auto_choices(report)) == 3
    mine = tuning.auto_choices(report, d=512, n_database=(5000,))
    assert [e["choice"] for e in mine.values()] == ["fp32"]
    assert len(tuning.auto_choices(report, d=512, n_database=(5000, 118000))) == 2
    report["auto_candidates"] = ["fp32", "bf16"]
    report["torch"] = "2.13.0"
    lines = tuning.describe_auto(report, d=512, n_database=(5000,))
    assert "whichever measures faster" in lines[0]
    assert (
        lines[1].strip()
        == "d=512 k<=16 queries<=16384 database<=16384 offset: fp32 (bf16 measured 0.95x fp32)"
    )
    assert "not measured yet" in tuning.describe_auto(report, d=100)[1]
    report["auto_candidates"], report["torch"] = ["fp32"], None
    assert tuning.describe_auto(report) == ["precision auto = fp32 on this machine (torch is not installed)"]


def test_dehub_info_shows_auto_for_the_index_shapes(cache, tmp_path, capsys, monkeypatch):
    from dehub import Index
    from dehub.cli import main

    rng = np.random.default_rng(0)
    g = rng.standard_normal((300, 24)).astype(np.float32)
    r = rng.standard_normal((900, 24)).astype(np.float32)
    path = tmp_path / "i.dehub"
    Index.build(g, r, method="nnn", k=4, normalize="none").save(path)
    tuning.record_choice(_shape(d=24, nd=300, k=10, offset=True), "fp32", {"bf16_over_fp32": 1.02})
    tuning.record_choice(_shape(d=24, nd=900, k=4), "fp32", {"bf16_over_fp32": 1.1})
    tuning.record_choice(_shape(d=64, nd=300), "bf16", {"bf16_over_fp32": 0.4})  # another dimension
    assert main(["info", str(path)]) == 0
    out = [line for line in capsys.readouterr().out.splitlines() if line.startswith("engine:")]
    assert out[0] == "engine:   this index: precision=fp32"
    assert "precision auto" in out[1]
    report = tuning.tuning_report()
    if report["auto_candidates"] == ["fp32", "bf16"]:
        assert len(out) == 4 and "d=24" in out[2] and "d=24" in out[3] and "0.40x" not in " ".join(out)
