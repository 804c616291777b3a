"""The shared file helpers: atomic replacement and file checksums."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys

import pytest

from dehub._io import atomic_path, atomic_write_text, sha256_file


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_failing_writer_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_sha256_file_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 10000  # spans several 1 MiB read blocks
    p = tmp_path / "blob"
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- issue 9
def test_a_symlink_is_written_through(tmp_path):
    """Before: the link was replaced by a regular file and the target kept the old content."""
    real = tmp_path / "data" / "index.v3"
    real.parent.mkdir()
    atomic_write_text(real, "v3")
    link = tmp_path / "current"
    link.symlink_to(real)
    atomic_write_text(link, "v4")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "v4"
    assert sorted(p.name for p in real.parent.iterdir()) == ["index.v3"], (
        "the temp file lived beside the target"
    )
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "data" / "new.txt")
    atomic_write_text(dangling, "x")
    assert dangling.is_symlink() and (tmp_path / "data" / "new.txt").read_text() == "x"


def test_existing_permissions_are_kept(tmp_path):
    """Before: re-saving a 0600 file made it 0644."""
    target = tmp_path / "secret.dehub"
    atomic_write_text(target, "old")
    os.chmod(target, 0o600)
    old = os.umask(0o022)
    try:
        atomic_write_text(target, "new")
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        os.chmod(target, 0o640)
        atomic_write_text(target, "newer")
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
        fresh = tmp_path / "fresh.txt"
        atomic_write_text(fresh, "x")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
    finally:
        os.umask(old)


def _fake_temp(target, hex12: str) -> str:
    name = f".{target.name}.{hex12}.tmp"
    (target.parent / name).write_bytes(b"half a file")
    return name


def test_stale_temp_files_of_the_same_target_are_cleaned(tmp_path):
    """Before: the .tmp files of a killed save stayed forever."""
    target = tmp_path / "i.dehub"
    atomic_write_text(target, "v1")
    stale = [_fake_temp(target, "0123456789ab"), _fake_temp(target, "ffffffffffff")]
    unrelated = [
        _fake_temp(tmp_path / "other.dehub", "0123456789ab"),  # another target's
        ".i.dehub.notours.tmp",  # not the pattern
        "i.dehub.0123456789ab.tmp",
    ]
    (tmp_path / unrelated[1]).write_text("keep")
    (tmp_path / unrelated[2]).write_text("keep")
    atomic_write_text(target, "v2")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not set(stale) & set(names)
    assert names == sorted(["i.dehub", *unrelated])


def test_a_live_writers_temp_file_is_left_alone(tmp_path):
    """A temp file whose flock is held (its writer is alive) is not deleted."""
    pytest.importorskip("fcntl")
    target = tmp_path / "i.dehub"
    live = tmp_path / _fake_temp(target, "aaaaaaaaaaaa")
    code = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(live)!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        atomic_write_text(target, "v1")
        assert live.exists(), "a live writer's temporary file must survive"
    finally:
        holder.stdin.close()
        holder.wait(timeout=600)
    atomic_write_text(target, "v2")  # its writer is gone now: stale
    assert not live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.dehub"]


def test_index_save_through_symlink_keeps_mode(tmp_path, rng, unit):
    from dehub import Index

    g, r = unit(rng, 10, 4), unit(rng, 20, 4)
    real = tmp_path / "real.dehub"
    Index.build(g, r, k=3).save(real)
    os.chmod(real, 0o600)
    link = tmp_path / "link.dehub"
    link.symlink_to(real)
    Index.build(g, r, k=5).save(link)
    assert link.is_symlink() and stat.S_IMODE(real.stat().st_mode) == 0o600
    assert Index.load(real).model.k == 5


def test_concurrent_writers_never_delete_each_others_temp_files(tmp_path):
    """Each save cleans stale temps; two live writers must not take each other's for stale."""
    pytest.importorskip("fcntl")
    target = tmp_path / "shared.txt"
    code = (
        "import sys\n"
        "from dehub._io import atomic_write_text\n"
        "for i in range(60):\n"
        f"    atomic_write_text({str(target)!r}, sys.argv[1] * 50000)\n"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", code, c], stderr=subprocess.PIPE, text=True) for c in "ab"
    ]
    seen = set()
    while any(w.poll() is None for w in writers):
        try:
            text = target.read_text()
        except FileNotFoundError:
            continue
        seen.add(text[:1])
        assert text in ("a" * 50000, "b" * 50000), "a reader saw a mixed or partial file"
    for w in writers:
        assert w.wait(timeout=600) == 0, w.stderr.read()[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.txt"]
