"""Durable, symlink-safe file writes: the one helper for the run store, keys, signatures and
the graph log.

    write_atomic(path, data)     readers see the old file or the new one, never a torn one
    write_new(path, data)        create `path` only if nothing is there (False if something is)
    write_all(fd, data)          loop until os.write took everything

Temporary files come from `tempfile.mkstemp` in the target's directory: a fresh random name
opened with O_CREAT|O_EXCL|O_NOFOLLOW, so a symlink or file planted at a predictable temp
name (another user's `.<step>.json.<pid>.tmp` in a shared `.maml/`) is never opened, let
alone written through. The final step is `rename` (or `link`), which replaces or refuses the
directory entry itself: a symlink at the committed name is replaced, never followed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd` (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _temp_copy(path: Path, data: bytes, mode: int, durable: bool = True) -> str:
    """A (synced) temp file holding `data` beside `path`; returns its name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        write_all(fd, data)
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644, *,
                 durable: bool = True) -> None:
    """Replace `path` with `data`: temp file, fsync, rename, fsync of the directory. With
    durable=False the fsyncs are skipped: still all-or-nothing, but a power cut may bring
    back the previous version."""
    path = Path(path)
    tmp = _temp_copy(path, data, mode, durable)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def write_new(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> bool:
    """Create `path` holding `data`, complete or not at all; False if `path` already exists
    (another process got there first: its file is whole, since it was linked in whole)."""
    path = Path(path)
    tmp = _temp_copy(path, data, mode)
    try:
        os.link(tmp, path)       # atomic, and refuses to replace anything (a symlink too)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    fsync_dir(path.parent)
    return True


def write_synced(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file that must not exist yet (O_EXCL|O_NOFOLLOW), fsync, close."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename, link or new file inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
