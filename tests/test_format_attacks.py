"""Hostile index files (issue 9): every crafted file ends in IndexFormatError, never another
exception, a crash, or an allocation beyond the file's size.

The files are built by ``crafted_index`` from the documented layout alone, with valid
checksums: a foreign writer can always produce those, so the checksum proves nothing
about the content.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest

import crafted_index as crafted
from dehub import Index, IndexFormatError
from dehub._format import MAX_HEADER_BYTES, MAX_JSON_DEPTH, read_container, read_header, write_container


@pytest.fixture
def gallery(rng, unit):
    return unit(rng, 12, 4)


def _raises(path, match):
    with pytest.raises(IndexFormatError, match=match) as info:
        Index.load(path)
    assert str(path) in str(info.value), "every error names the file"
    return info


# --------------------------------------------------------------------------- layout attacks
def test_crafted_plain_index_is_valid(tmp_path, gallery):
    """The crafting helper writes what the docs describe: a valid index loads."""
    idx = Index.load(crafted.plain_index(tmp_path / "ok.dehub", gallery))
    np.testing.assert_array_equal(np.asarray(idx.model.gallery_), gallery)
    assert idx.model.name == "plain" and idx.n_items == 12


def test_repeated_data_region_memory_bomb(tmp_path):
    """A 4.5 MB file listing its one 4 MiB region 2,000 more times (8 GiB declared)."""
    path = crafted.memory_bomb(tmp_path / "bomb.dehub")
    assert path.stat().st_size < 5 << 20
    match = r"malformed header: array 'copy0' starts at byte \d+, before the end of the previous array 'ids'"
    _raises(path, match + r".*expected arrays in file order without overlap")
    with pytest.raises(IndexFormatError, match="without overlap"):
        read_header(path)  # dehub info refuses it too, before reading any array


@pytest.mark.parametrize(
    "mutate, match",
    [
        # the second array moved before the end of the first: overlap
        (
            lambda h: h["arrays"][1].update(offset=h["arrays"][0]["offset"]),
            r"before the end of the previous array",
        ),
        # listed out of file order
        (lambda h: h["arrays"].reverse(), r"before the end of the previous array 'ids'"),
        (lambda h: h["arrays"][1].update(offset=h["arrays"][1]["offset"] + 8), r"expected a multiple of 64"),
        (
            lambda h: h["arrays"][1].update(offset=10**15),
            r"truncated: expected at least 1000000000000\d* bytes",
        ),
        (lambda h: h["arrays"].append(dict(h["arrays"][1])), r"expected unique non-empty string array names"),
        (lambda h: h["arrays"][0].update(name=7), r"expected unique non-empty string array names"),
        (lambda h: h["arrays"][0].update(sha256="x" * 64), r"expected a 64-digit hex sha256"),
        (lambda h: h["arrays"][0].update(shape=[True, 4]), r"invalid shape/offset/nbytes"),
        (
            lambda h: h["arrays"][0].update(shape=[1] * 40, nbytes=4),
            r"has 40 dimensions; expected at most 32",
        ),
        (lambda h: h["arrays"][0].update(offset=2.0**6), r"invalid shape/offset/nbytes"),
        (
            lambda h: h.update(format_version=2),
            r"format_version 2 differs from the version 1 in the file's prefix",
        ),
        (lambda h: h.update(arrays={"gallery": 1}), r"expected a JSON object with an 'arrays' list"),
    ],
)
def test_array_ranges_must_be_inside_in_order_and_disjoint(tmp_path, gallery, mutate, match):
    path = crafted.plain_index(tmp_path / "x.dehub", gallery, mutate=mutate)
    _raises(path, match)


def test_nested_json_1000_deep(tmp_path):
    """Before: RecursionError traceback. The depth is measured without recursion."""
    _raises(crafted.deep_json(tmp_path / "deep.dehub"), r"JSON nested 1000 levels deep; expected at most 64")
    deep_in_metadata = crafted.plain_index(
        tmp_path / "deep2.dehub",
        np.eye(2, dtype=np.float32),
        mutate=lambda h: h.update(
            metadata=json.loads("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
        ),
    )
    _raises(deep_in_metadata, rf"JSON nested {MAX_JSON_DEPTH + 2} levels deep")


def test_brackets_inside_strings_do_not_count_as_depth(tmp_path):
    note = '"[[[[{{{{' * 50 + "\\" + '"' + "]]]]"
    path = crafted.plain_index(
        tmp_path / "s.dehub", np.eye(2, dtype=np.float32), mutate=lambda h: h.update(metadata={"note": note})
    )
    assert Index.load(path).metadata == {"note": note}


def test_header_of_1_gib_declared_is_refused_before_reading(tmp_path):
    """Before: the 1 GiB header was read (and parsed: 3.1 GB RSS). Sparse file: no disk."""
    path = crafted.declared_huge_header(tmp_path / "huge.dehub")
    _raises(path, rf"header of {1 << 30} bytes exceeds the limit of {MAX_HEADER_BYTES} bytes")


def test_real_header_above_the_cap(tmp_path):
    path = crafted.real_big_header(tmp_path / "big.dehub", MAX_HEADER_BYTES + 1)
    _raises(path, rf"header of {MAX_HEADER_BYTES + 1} bytes exceeds the limit")
    with pytest.raises(
        ValueError, match=rf"would take \d+ bytes; dehub files allow at most {MAX_HEADER_BYTES}"
    ):
        write_container(tmp_path / "w.dehub", {"blob": "x" * MAX_HEADER_BYTES}, {})
    assert not (tmp_path / "w.dehub").exists()


@pytest.mark.parametrize(
    "shape, nbytes",
    [([2**62, 4], 0), ([2**32, 2**32, 2], 0), ([2**63, 0], 0), ([3, 2**61], (3 * 2**61 * 4) % 2**64)],
)
def test_shape_overflow(tmp_path, shape, nbytes):
    """Before: the int64 product wrapped, passed the size check, and numpy failed (ValueError)."""

    def overflow(h):
        h["arrays"][0].update(shape=shape, nbytes=nbytes)

    path = crafted.plain_index(
        tmp_path / "o.dehub", np.zeros((0, 4), np.float32), ids=np.zeros(0, np.int64), mutate=overflow
    )
    _raises(path, r"array 'gallery': shape .* of float32 is impossibly large")


def test_json_constants_and_duplicate_keys(tmp_path, gallery):
    for raw, match in (
        (b'{"arrays": [], "x": NaN}', r"header is not valid JSON: non-standard JSON constant NaN"),
        (b'{"arrays": [], "arrays": []}', r"header is not valid JSON: duplicate key 'arrays'"),
        (b'{"arrays": [], "alpha": 1e400}', r"header is not valid JSON: number '1e400' overflows a float"),
        (b'{"arrays": [], "n": 1' + b"1" * 5000 + b"}", r"header is not valid JSON"),
        (b"\xff\xfe", r"header is not valid JSON"),
    ):
        _raises(crafted.craft(tmp_path / "j.dehub", {}, [], raw_header=raw), match)


def test_missing_format_version_is_read_from_the_prefix(tmp_path, gallery):
    """Before: dehub info crashed with KeyError: 'format_version'."""
    path = crafted.plain_index(tmp_path / "nofv.dehub", gallery, format_version=False)
    assert b"format_version" not in path.read_bytes()
    assert Index.describe_file(path)["format_version"] == 1
    assert Index.load(path).n_items == 12
    from dehub.cli import main

    assert main(["info", str(path)]) == 0


def test_only_the_arrays_an_index_needs_are_read(tmp_path, gallery):
    """An unknown array is neither allocated nor hashed by load; verify_file checks it."""

    def corrupt_extra(h):
        h["arrays"][2]["sha256"] = "0" * 64  # the 'extra' array's checksum is wrong

    extra = np.arange(1000, dtype=np.int64)
    path = crafted.craft(
        tmp_path / "extra.dehub",
        crafted.index_header("plain"),
        [("gallery", gallery), ("ids", np.arange(12, dtype=np.int64)), ("extra", extra)],
        mutate=corrupt_extra,
    )
    assert Index.load(path).n_items == 12
    with pytest.raises(IndexFormatError, match=r"checksum mismatch in array 'extra'"):
        Index.verify_file(path)
    _, arrays = read_container(path, names={"gallery"}, verify=True)
    assert list(arrays) == ["gallery"]


def test_bool_array_bytes_must_be_0_or_1(tmp_path):
    raw = np.array([1, 2, 0], np.uint8)
    path = crafted.craft(
        tmp_path / "b.dehub", {}, [("b", raw)], mutate=lambda h: h["arrays"][0].update(dtype="|b1")
    )
    with pytest.raises(IndexFormatError, match=r"array 'b': bool values must be bytes 0 or 1"):
        read_container(path)


def test_directory_given_as_index(tmp_path):
    with pytest.raises(IndexFormatError, match=r"is a directory; expected a dehub index file"):
        Index.load(tmp_path)


# --------------------------------------------------------------------------- fuzzing
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
given, settings, HealthCheck = hypothesis.given, hypothesis.settings, hypothesis.HealthCheck

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
_FIELDS = ["kind", "method", "params", "metadata", "n_reference", "format_version", "arrays"]
_ENTRY_FIELDS = ["name", "dtype", "shape", "offset", "nbytes", "sha256"]


@functools.lru_cache(maxsize=1)
def _valid_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return _build_valid(Path(tmp))


def _valid_file(tmp_path) -> bytes:
    return _valid_bytes()


def _build_valid(tmp_path) -> bytes:
    rng = np.random.default_rng(0)
    g = rng.standard_normal((6, 3)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    r = rng.standard_normal((9, 3)).astype(np.float32)
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    idx = Index.build(g, r, k=2, keep_reference=True)
    return idx.save(tmp_path / "valid.dehub").read_bytes()


def _outcome(path) -> None:
    try:
        idx = Index.load(path)
    except IndexFormatError:
        return
    # a valid index: it must be usable
    q = np.asarray(idx.model.gallery_[:1], dtype=np.float32)
    idx.search(q, 2, normalize="none")


_settings = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_settings
@given(data=st.binary(max_size=2048))
def test_any_byte_string(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fz") / "f.dehub"
    path.write_bytes(data)
    _outcome(path)


@_settings
@given(data=st.binary(max_size=600), prefix=st.booleans())
def test_any_bytes_after_a_valid_prefix(tmp_path_factory, data, prefix):
    """Random headers with a correct header checksum (and random data after)."""
    path = tmp_path_factory.mktemp("fz") / "f.dehub"
    header = data[: len(data) // 2] if prefix else data
    path.write_bytes(
        crafted.PREFIX.pack(crafted.MAGIC, 1, len(header), hashlib.sha256(header).digest()) + header + data
    )
    _outcome(path)


@_settings
@given(st.data())
def test_mutations_of_a_valid_file(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("fz")
    raw = bytearray(_valid_file(tmp))
    op = data.draw(st.sampled_from(["flip", "cut", "splice"]))
    if op == "flip":
        for pos in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=4)):
            raw[pos] ^= data.draw(st.integers(1, 255))
    elif op == "cut":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    else:
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=64))
    path = tmp / "m.dehub"
    path.write_bytes(bytes(raw))
    _outcome(path)


@_settings
@given(st.data())
def test_foreign_headers_with_valid_checksums(tmp_path_factory, data):
    """A foreign writer changes header values (top level or in array entries) and re-checksums."""
    tmp = tmp_path_factory.mktemp("fz")
    raw = _valid_file(tmp)
    _, _, hlen, _ = struct.unpack_from("<8sIQ32s", raw)
    header = json.loads(raw[52 : 52 + hlen])
    for _ in range(data.draw(st.integers(1, 3))):
        if data.draw(st.booleans()):
            header[data.draw(st.sampled_from(_FIELDS))] = data.draw(_json)
        elif isinstance(header.get("arrays"), list) and header["arrays"]:
            i = data.draw(st.integers(0, len(header["arrays"]) - 1))
            entry = header["arrays"][i]
            if isinstance(entry, dict):
                key = data.draw(st.sampled_from(_ENTRY_FIELDS))
                entry[key] = data.draw(
                    _json | st.integers(0, 3000) | st.sampled_from(["<f4", "<i8", "|b1", "<f2"])
                )
    text = json.dumps(header).encode().ljust(hlen)
    if len(text) > hlen:
        text = json.dumps(header).encode()  # grows the header: the data moves, offsets lie
    path = tmp / "h.dehub"
    path.write_bytes(
        crafted.PREFIX.pack(crafted.MAGIC, 1, len(text), hashlib.sha256(text).digest())
        + text
        + raw[52 + hlen :]
    )
    _outcome(path)


# --------------------------------------------------------------------------- the CLI on hostile files
@pytest.mark.parametrize("make", [crafted.memory_bomb, crafted.deep_json, crafted.shape_overflow])
def test_cli_gives_one_line_and_exit_2(tmp_path, capsys, make):
    """Before: the memory bomb and the nested header printed tracebacks (MemoryError, RecursionError)."""
    from dehub.cli import main

    path = make(tmp_path / "evil.dehub")
    q = tmp_path / "q.npy"
    np.save(q, np.eye(4, dtype=np.float32))
    for argv in (["search", str(path), "--queries", str(q)], ["info", str(path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"dehub: error: {path}:") and "\n" not in err, err


def test_a_fifo_or_device_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.dehub"
    os.mkfifo(fifo)
    with pytest.raises(IndexFormatError, match=r"is not a regular file \(a pipe or device\?\)"):
        Index.load(fifo)  # before: open() waited forever for a writer
    with pytest.raises(IndexFormatError, match="is not a regular file"):
        Index.describe_file("/dev/zero")
