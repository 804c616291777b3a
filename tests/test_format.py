"""The pickle-free container (dehub._format): layout, checksums, atomic writes, errors.

The byte layout checked here is the one documented in docs/index-format.md.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import struct

import numpy as np
import pytest

from dehub._format import (
    FORMAT_VERSION,
    MAGIC,
    IndexFormatError,
    read_container,
    read_header,
    write_container,
)

PREFIX = struct.Struct("<8sIQ32s")  # as documented: magic, version, header length, sha256


@pytest.fixture
def arrays(rng):
    return {
        "f32": rng.standard_normal((7, 3)).astype(np.float32),
        "f16": rng.standard_normal(5).astype(np.float16),
        "f64": rng.standard_normal((2, 2, 2)),
        "i64": np.arange(-3, 9, dtype=np.int64),
        "i32": np.arange(4, dtype=np.int32),
        "u8": np.arange(250, 256, dtype=np.uint8),
        "u32": np.arange(3, dtype=np.uint32),
        "u64": np.array([2**63 + 5], dtype=np.uint64),
        "b": np.array([True, False, True]),
        "empty": np.empty((0, 4), np.float32),
        "scalar": np.array(2.5),
    }


@pytest.fixture
def saved(tmp_path, arrays):
    path = tmp_path / "c.dehub"
    write_container(path, {"kind": "test", "note": "héllo"}, arrays)
    return path


def _parse(path):
    raw = path.read_bytes()
    magic, version, hlen, hsha = PREFIX.unpack_from(raw)
    hbytes = raw[PREFIX.size : PREFIX.size + hlen]
    return raw, magic, version, hlen, hsha, hbytes


def _rewrite(path, raw: bytes, header: dict | None = None, version: int | None = None) -> None:
    """Write ``raw`` back with a new header (valid checksum) and/or version, data kept."""
    magic, v, hlen, hsha = PREFIX.unpack_from(raw)
    hbytes = raw[PREFIX.size : PREFIX.size + hlen]
    if header is not None:
        hbytes = json.dumps(header).encode()
        hsha = hashlib.sha256(hbytes).digest()
    prefix = PREFIX.pack(magic, v if version is None else version, len(hbytes), hsha)
    path.write_bytes(prefix + hbytes + raw[PREFIX.size + hlen :])


def _flip(path, pos: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[pos] ^= 0x10
    path.write_bytes(bytes(raw))


# --------------------------------------------------------------------------- layout
def test_round_trip_every_dtype(saved, arrays):
    header, back = read_container(saved)
    assert list(back) == list(arrays)
    for name, a in arrays.items():
        assert back[name].dtype == a.dtype and back[name].shape == a.shape, name
        np.testing.assert_array_equal(back[name], a)
    assert header["kind"] == "test" and header["note"] == "héllo"
    assert header["format_version"] == FORMAT_VERSION


def test_byte_layout_is_as_documented(saved, arrays):
    raw, magic, version, hlen, hsha, hbytes = _parse(saved)
    assert magic == MAGIC == b"DEHUBIX\x00"
    assert version == FORMAT_VERSION == 1
    assert hashlib.sha256(hbytes).digest() == hsha
    header = json.loads(hbytes.decode("utf-8"))
    assert hbytes == json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    data_start = PREFIX.size + hlen
    assert set(raw[data_start : header["arrays"][0]["offset"]]) <= {0}, "padding is zeros"
    end = 0
    for meta in header["arrays"]:
        a = arrays[meta["name"]]
        assert meta["offset"] % 64 == 0 and meta["offset"] >= max(end, data_start)
        assert meta["dtype"] == a.dtype.newbyteorder("<").str or meta["dtype"] == a.dtype.str
        assert meta["shape"] == list(a.shape) and meta["nbytes"] == a.nbytes
        chunk = raw[meta["offset"] : meta["offset"] + meta["nbytes"]]
        assert chunk == np.ascontiguousarray(a).tobytes()
        assert meta["sha256"] == hashlib.sha256(chunk).hexdigest()
        end = meta["offset"] + meta["nbytes"]
    assert len(raw) == end, "the file ends with the last array"


def test_big_endian_and_non_contiguous_inputs(tmp_path, rng):
    a = rng.standard_normal((4, 6)).astype(">f4")
    b = np.asfortranarray(rng.standard_normal((3, 5)))[:, ::2]
    write_container(tmp_path / "x", {}, {"a": a, "b": b})
    header, back = read_container(tmp_path / "x")
    assert header["arrays"][0]["dtype"] == "<f4"
    np.testing.assert_array_equal(back["a"], a)
    np.testing.assert_array_equal(back["b"], b)


@pytest.mark.parametrize("bad", [np.zeros(2, np.complex64), np.array(["a"]), np.array([{}], dtype=object)])
def test_unsupported_dtypes_are_refused_on_write(tmp_path, bad):
    with pytest.raises(TypeError, match=r"cannot store dtype .* expected one of float16/32/64"):
        write_container(tmp_path / "x", {}, {"a": bad})
    assert not (tmp_path / "x").exists()


def test_mmap_load(saved, arrays):
    _, back = read_container(saved, mmap=True)
    assert isinstance(back["f32"], np.memmap) and not back["f32"].flags.writeable
    for name, a in arrays.items():
        np.testing.assert_array_equal(back[name], a)


def test_read_header_only(saved):
    header = read_header(saved)
    assert [a["name"] for a in header["arrays"]][:2] == ["f32", "f16"]


def test_overwrite_and_parent_creation(tmp_path):
    path = tmp_path / "deep" / "dir" / "c.dehub"
    write_container(path, {"v": 1}, {"a": np.zeros(3)})
    write_container(path, {"v": 2}, {"a": np.ones(3)})
    header, back = read_container(path)
    assert header["v"] == 2 and back["a"].tolist() == [1, 1, 1]
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.dehub"], "no temp file left"


# --------------------------------------------------------------------------- errors
def test_not_a_dehub_file(tmp_path):
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((20, 20)))
    with pytest.raises(
        IndexFormatError, match=r"not a dehub index file \(expected magic b'DEHUBIX\\x00', found b'\\x93NUMPY"
    ):
        read_container(npy)
    short = tmp_path / "short.txt"
    short.write_text("hello")
    with pytest.raises(IndexFormatError, match=r"not a dehub index file .* found b'hello'"):
        read_container(short)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no index file at .*nope\.dehub"):
        read_container(tmp_path / "nope.dehub")


def test_wrong_version(saved):
    raw = saved.read_bytes()
    for version in (FORMAT_VERSION + 1, 0, 2**32 - 1):
        _rewrite(saved, raw, version=version)
        with pytest.raises(
            IndexFormatError,
            match=rf"format version {version} is not supported; this dehub reads version {FORMAT_VERSION}\. "
            "Upgrade dehub or rebuild the index",
        ):
            read_container(saved)


def test_truncated_everywhere(saved):
    raw = saved.read_bytes()
    hlen = PREFIX.unpack_from(raw)[2]
    cases = {
        0: r"truncated: 0 bytes is shorter than the 52-byte dehub prefix",
        5: r"truncated: 5 bytes is shorter than the 52-byte dehub prefix",
        51: r"truncated: 51 bytes is shorter than the 52-byte dehub prefix",
        52: rf"truncated: header needs {hlen} bytes after the prefix, file has 0",
        60: rf"truncated: header needs {hlen} bytes after the prefix, file has 8",
        PREFIX.size + hlen: r"truncated: expected at least \d+ bytes, found \d+\. The file was cut short",
        len(raw) - 1: rf"truncated: expected at least {len(raw)} bytes, found {len(raw) - 1}",
    }
    for cut, match in cases.items():
        saved.write_bytes(raw[:cut])
        with pytest.raises(IndexFormatError, match=match):
            read_container(saved)


def test_every_cut_is_an_index_format_error(saved):
    raw = saved.read_bytes()
    for cut in range(0, len(raw), 7):
        saved.write_bytes(raw[:cut])
        with pytest.raises(IndexFormatError, match="truncated"):
            read_container(saved)


def test_flipped_byte_in_header(saved):
    raw, _, _, hlen, _, _ = _parse(saved)
    for pos in (PREFIX.size, PREFIX.size + hlen // 2, PREFIX.size + hlen - 1, 20, 51):
        saved.write_bytes(raw)
        _flip(saved, pos)  # a header byte, or a byte of the header checksum in the prefix
        with pytest.raises(IndexFormatError, match=r"header checksum mismatch: the file is corrupt"):
            read_container(saved)


def test_flipped_byte_in_header_length_does_not_allocate(saved):
    raw = saved.read_bytes()
    for byte in range(12, 20):  # the uint64 header length
        data = bytearray(raw)
        data[byte] ^= 0x80
        saved.write_bytes(bytes(data))
        with pytest.raises(
            IndexFormatError, match=r"truncated: header needs \d+ bytes|header checksum mismatch"
        ):
            read_container(saved)


def test_flipped_byte_in_array_data(saved):
    raw = saved.read_bytes()
    header = read_header(saved)
    for meta in header["arrays"]:
        if meta["nbytes"] == 0:
            continue
        saved.write_bytes(raw)
        _flip(saved, meta["offset"] + meta["nbytes"] - 1)
        with pytest.raises(
            IndexFormatError,
            match=rf"checksum mismatch in array '{meta['name']}': the file is corrupt \(changed after it "
            r"was written\)\. Restore it or rebuild the index",
        ):
            read_container(saved)
        with pytest.raises(IndexFormatError, match="checksum mismatch"):
            read_container(saved, mmap=True)
        if meta["dtype"] == "|b1":  # a bool byte other than 0/1 is refused even unverified
            with pytest.raises(IndexFormatError, match=r"array 'b': bool values must be bytes 0 or 1"):
                read_container(saved, verify=False)
        else:
            read_container(saved, verify=False)  # documented: verify=False skips the array hashes


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda h: h.pop("arrays"), r"malformed header: expected a JSON object with an 'arrays' list"),
        (
            lambda h: h["arrays"][0].pop("sha256"),
            r"malformed header: expected every array entry to have the keys",
        ),
        (
            lambda h: h["arrays"][0].update(dtype="|O"),
            r"malformed header: array 'f32' has unsupported dtype '\|O'",
        ),
        (lambda h: h["arrays"][0].update(shape=[-1, 3]), r"malformed header: array 'f32' has invalid shape"),
        (
            lambda h: h["arrays"][0].update(offset=0),
            r"malformed header: array 'f32' starts at byte 0, inside the header",
        ),
        (
            lambda h: h["arrays"][0].update(nbytes=4),
            r"array 'f32': shape \(7, 3\) of float32 needs 84 bytes, header says 4",
        ),
    ],
)
def test_malformed_header_with_valid_checksum(saved, mutate, match):
    raw = saved.read_bytes()
    header = read_header(saved)
    mutate(header)
    # Keep the array offsets valid: the new header is padded to the old header's length
    # and gets a valid checksum, as a foreign (or buggy) writer could produce.
    hlen = PREFIX.unpack_from(raw)[2]
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(text) <= hlen
    text = text.ljust(hlen)  # JSON allows trailing spaces
    data = bytearray(raw)
    data[PREFIX.size : PREFIX.size + hlen] = text
    data[20:52] = hashlib.sha256(text).digest()
    saved.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=match):
        read_container(saved)


def test_no_pickle_anywhere(saved):
    raw = saved.read_bytes()
    assert b"pickle" not in raw and b"\x80\x04\x95" not in raw  # no pickle protocol-4 frame
    _, back = read_container(saved)
    assert all(a.dtype != object for a in back.values())


# --------------------------------------------------------------------------- atomic writes
class _CrashingFile:
    """Wraps a real file; ``write`` raises once ``limit`` bytes have gone through."""

    def __init__(self, f, limit: int, exc: BaseException):
        self._f, self._left, self._exc = f, limit, exc

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self._left:
            self._f.write(data[: self._left])
            self._f.flush()
            raise self._exc
        self._left -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


@pytest.mark.parametrize("limit", [0, 30, 200, 10_000])
@pytest.mark.parametrize("exc", [OSError("simulated crash: disk full"), KeyboardInterrupt()])
def test_crash_mid_write_leaves_old_file(tmp_path, monkeypatch, rng, limit, exc):
    import dehub._format as fmt

    path = tmp_path / "c.dehub"
    old = {"a": np.arange(10.0)}
    write_container(path, {"v": "old"}, old)
    before = path.read_bytes()
    # write_container opens its temporary file with the builtin open(): wrap that file
    monkeypatch.setattr(
        fmt, "open", lambda f, mode: _CrashingFile(builtins.open(f, mode), limit, exc), raising=False
    )
    with pytest.raises(type(exc)):
        write_container(path, {"v": "new"}, {"a": rng.standard_normal(5000)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    header, back = read_container(path)
    assert header["v"] == "old" and np.array_equal(back["a"], old["a"])
    assert [p.name for p in tmp_path.iterdir()] == ["c.dehub"], "the temporary file must be removed"


def test_crash_before_rename_leaves_old_file(tmp_path, monkeypatch):
    import dehub._format as fmt

    path = tmp_path / "c.dehub"
    write_container(path, {"v": "old"}, {"a": np.zeros(2)})

    def crash(*args):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(fmt.os, "replace", crash)
    with pytest.raises(OSError, match="before rename"):
        write_container(path, {"v": "new"}, {"a": np.ones(2)})
    monkeypatch.undo()
    assert read_header(path)["v"] == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["c.dehub"]


def test_written_file_gets_the_usual_permissions(tmp_path):
    """Like any file the user writes (mode 0o666 minus the umask), not mkstemp's 0o600."""
    old = os.umask(0o022)
    try:
        write_container(tmp_path / "c.dehub", {}, {"a": np.zeros(2)})
    finally:
        os.umask(old)
    assert (tmp_path / "c.dehub").stat().st_mode & 0o777 == 0o644
