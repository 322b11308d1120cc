"""Writing result files so that a reader never sees half of one: one way, for every file
holoburn writes whole (summary.json, metrics.json, model cards, engine payloads, gate tables),
and one for a file written a line at a time (results.jsonl); and how much room is left to write."""
from __future__ import annotations

import errno
import json
import os
import resource
import tempfile
from collections.abc import Callable
from pathlib import Path

from holoburn.clinical.errors import BadInput

#: what a write that cannot grow a file fails with: a full disk, a file-size limit (ulimit -f;
#: with SIGXFSZ ignored), a full quota
FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class OutputFull(BadInput):
    """The output folder cannot take more: its disk (or quota) is full, or the file-size limit
    is reached. The message names the folder and says what was kept."""


def disk_free(path: Path) -> int:
    """Bytes the file system holding `path` (a file or folder, existing or about to be made)
    leaves this user."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    fs = os.statvfs(folder)
    return fs.f_bavail * fs.f_frsize


def file_room(path: Path) -> int | None:
    """Bytes the file `path` (existing or about to be made) may still grow by under the
    process's file-size limit (RLIMIT_FSIZE, `ulimit -f`); None without a limit."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit == resource.RLIM_INFINITY:
        return None
    path = Path(path)
    return limit - (path.stat().st_size if path.is_file() else 0)


class LineFile:
    """A text file written a whole line at a time (results.jsonl): a line the disk cannot take
    is taken back, so the file never ends inside a line, and OutputFull is raised."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.size = 0  # bytes of whole lines written

    def write_line(self, text: str) -> None:
        data = (text + "\n").encode()
        done = 0
        try:
            while done < len(data):  # a write can stop short at the limit; the next one then fails
                done += os.write(self._fd, data[done:])
        except OSError as exc:
            os.ftruncate(self._fd, self.size)  # shrinking needs no space
            os.lseek(self._fd, self.size, os.SEEK_SET)
            if exc.errno not in FULL:
                raise
            raise OutputFull(f"cannot write {self.path}: {os.strerror(exc.errno)}") from None
        self.size += len(data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | Callable[[object], None], mode: int = 0o644) -> Path:
    """Write `data` (bytes, or a function that writes into a binary file) to `path` atomically.

    A temporary file in the same folder is written, flushed and fsynced, then renamed over `path`;
    on any failure (a full disk included) the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, mode)  # mkstemp makes 0600; shared results and caches stay readable
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def write_json(path: Path, data, mode: int = 0o644) -> Path:
    """`data` as indented JSON, atomically (numbers NumPy made are written as plain numbers);
    OutputFull when the disk cannot take it."""
    try:
        return atomic_write(path, (json.dumps(data, indent=2, default=_plain) + "\n").encode(), mode)
    except OSError as exc:
        if exc.errno not in FULL:
            raise
        raise OutputFull(f"cannot write {path}: {os.strerror(exc.errno)}") from None


def _plain(value):
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
