"""File helpers shared by every writer: atomic replacement and file checksums.

:func:`atomic_path` is the one way dehub writes a file that a user may already depend on
(index files, FAISS exports and their sidecars, reports): the content goes to a new
temporary file in the same directory, is flushed to disk, and is renamed over the target
(``os.replace``), so a crash at any point leaves the old file or the new one, never a mix,
and no temporary file behind.

What else a save keeps:

* **Symlinks.** A target that is a symbolic link is resolved first: the new content
  replaces the file the link points to (in that file's directory), the link stays.
* **Permissions.** When the target exists, the new file gets its permission bits
  (a ``0600`` index stays ``0600``); a new file gets ``0666`` minus the umask.
* **Stale temporary files.** Each writer holds an exclusive ``flock`` on its temporary
  file (``.<name>.<12 hex>.tmp``) while it writes. A save first deletes the temporary
  files *of the same target* whose lock it can take: their writer is dead (a ``kill -9``
  or a power loss), since the lock is released when a process ends. Temporary files of
  live writers are left alone.
* **One writer at a time.** Two processes saving the same path at once each write a
  complete file and the last rename wins; neither file is ever mixed. But an update
  that reads, changes and saves (``Index.add(..., save_to=path)``) in two processes at
  once loses one of the two changes. Keep a single writer per file (readers may be many).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:  # POSIX; elsewhere stale temporary files are not cleaned
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_path", "atomic_write_text", "sha256_file", "resolve_target"]


def resolve_target(path: str | os.PathLike) -> Path:
    """The file a write to ``path`` must replace: ``path`` with symlinks resolved."""
    p = Path(path)
    return Path(os.path.realpath(p)) if p.is_symlink() else p


def _temp_pattern(target: Path) -> re.Pattern[str]:
    return re.compile(re.escape(f".{target.name}.") + r"[0-9a-f]{12}\.tmp")


def _lock(fd: int) -> bool:
    """Take an exclusive, non-blocking flock on ``fd``; ``False`` if another holds it."""
    if fcntl is None:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _clean_stale_temps(target: Path) -> list[str]:
    """Delete temporary files of ``target`` left by dead writers; returns their names."""
    if fcntl is None:  # pragma: no cover - Windows
        return []
    pattern = _temp_pattern(target)
    removed = []
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    for name in names:
        if not pattern.fullmatch(name):
            continue
        stale = target.parent / name
        try:
            fd = os.open(stale, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            if _lock(fd):  # its writer is gone: the lock dies with the process
                os.unlink(stale)
                removed.append(name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _create_temp(path: Path, mode: int | None) -> tuple[str, int]:
    """An exclusive new, empty, locked temporary file next to ``path``: ``(name, fd)``.

    Created with ``mode`` (by default 0o666 minus the umask, like any file the user
    writes: ``mkstemp`` would make it 0o600 and the renamed file unreadable to others).
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        # A cleaner may have deleted the file between its creation and the lock: then
        # the lock is held on an unlinked file, and we start again under a new name.
        if _lock(fd) and os.fstat(fd).st_nlink > 0:
            if mode is not None:
                os.chmod(tmp, mode)
            return str(tmp), fd
        os.close(fd)
    raise FileExistsError(f"could not create a temporary file next to {path}")  # pragma: no cover


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary file name to write; on success it replaces ``path`` atomically.

    The caller writes the whole content to the yielded name (by any means: ``open``,
    ``faiss.write_index``...). On leaving the block the file is fsynced and renamed over
    ``path`` (over the file it links to, if ``path`` is a symlink), keeping an existing
    file's permission bits, and the directory entry is made durable; if the block
    raises, the temporary file is removed and ``path`` is untouched.
    """
    target = resolve_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode: int | None = target.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = None
    _clean_stale_temps(target)
    tmp, lock_fd = _create_temp(target, mode)
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
    finally:
        os.close(lock_fd)
    try:  # make the rename itself durable
        dfd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some file systems refuse directory fsync
        pass


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
