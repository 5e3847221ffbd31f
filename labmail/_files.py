"""Crash-safe file writes: a reader (or a restart after SIGKILL) sees the old or the new file, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _temp_beside(path: Path, data: bytes, mode: int, durable: bool) -> str:
    """``data`` in a new temporary file in ``path``'s folder (made if missing), fsynced when ``durable``; its name.
    Written through the descriptor: no buffered file object, whose opening costs three system calls more — each
    of them a moment the lab's worker threads hand Python's lock back and forth under load."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except FileNotFoundError:  # the folder's first file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            write_all(fd, data)
            os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return tmp


def write_all(fd: int, data: bytes) -> None:
    """Write ``data`` through the descriptor ``fd``, to the last byte."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_folder(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o600, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename, fsync the folder.

    ``durable=False`` skips both fsyncs (still atomic: a reader sees the old or the new file), for data that may be
    lost in a power cut without harm — e.g. the diagnostic record beside a delivered message, whose message itself
    is fsynced before the server says 250."""
    atomic_write_files([(Path(path), data)], mode=mode, durable=durable)


def atomic_write_files(files: list[tuple[Path, bytes]], *, mode: int = 0o600, durable: bool = True) -> None:
    """Write several files of one folder, each atomically, in order (file *n* appears after file *n - 1*), with
    one fsync of the folder at the end: once this returns, all of them are on disk (``durable``). A crash before
    may leave the first ones without the last: a reader must take the last file as the sign the set is complete
    (e.g. the mail queue's envelope after its message). Meant for new files: if a write fails, none of this call's
    files is left (one it replaced is removed, not restored)."""
    files = [(Path(path), data) for path, data in files]
    if not files:
        return
    temps: list[str] = []
    done: list[Path] = []
    try:
        for path, data in files:
            temps.append(_temp_beside(path, data, mode, durable))
        for (path, _data), tmp in zip(files, temps):
            os.replace(tmp, path)
            done.append(path)
    except BaseException:
        for tmp in temps[len(done):]:
            unlink_quietly(tmp)
        for path in done:  # a set is whole or absent
            unlink_quietly(str(path))
        raise
    if durable:
        for folder in dict.fromkeys(path.parent for path, _data in files):
            _fsync_folder(folder)


def atomic_write_text(path: Path, text: str, *, mode: int = 0o600, durable: bool = True) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode, durable=durable)
