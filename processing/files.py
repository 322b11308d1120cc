"""Writing result files so that a reader never sees half of one: one way, for every file
holoburn writes whole (summary.json, metrics.json, model cards, engine payloads, gate tables)."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


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
    """`data` as indented JSON, atomically (numbers NumPy made are written as plain numbers)."""
    return atomic_write(path, (json.dumps(data, indent=2, default=_plain) + "\n").encode(), mode)


def _plain(value):
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
