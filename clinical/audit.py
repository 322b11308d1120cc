"""Append-only, tamper-evident audit log of every access to patient data (JSON lines).

One entry per line, UTF-8, keys in this order:

    {"seq": 0, "time": "2026-11-24T18:54:31.173875Z", "actor": "nurse1", "host": "bedside-3",
     "pid": 4242, "action": "read", "object": {...}, "details": {...},
     "prev": "<sha256 hex of the previous entry>", "hash": "<sha256 hex of this entry>"}

- `seq` counts entries from 0; `prev` of entry 0 is 64 zeros (`GENESIS`).
- `hash` is the SHA-256 of the canonical JSON of the entry without `hash` (sorted keys, no
  spaces, UTF-8), `prev` included, so every entry seals the whole history before it.
- `actor` is the user name of the process that wrote the entry (the operator), never a patient.
- `object` names what was touched by de-identified references only: `path_ref()` of a file
  path and the new (remapped) UIDs. Callers must never put a patient name, ID, original UID or
  raw path in `object` or `details`.

Every append takes an exclusive `fcntl.flock` on the log (two processes never interleave or
fork the chain), writes one line in one `write()` through an O_APPEND descriptor, then flushes
and `os.fsync`s it, so an entry that `append()` returned survives a crash or power cut.

`verify()` recomputes the chain and names the line of every edited, inserted, removed,
reordered or truncated entry. One thing no hash chain can show from the file alone is the
removal of the *last* entries: keep `head()` (entry count and last hash) somewhere else, e.g. in
the run's results, and pass it back as `verify(path, expect_head=...)` to close that gap.

A file path can itself hold a patient name, so logs name files by `path_ref(path)`: a
truncated SHA-256 of the absolute path. It is a pseudonym, not anonymity: someone who can guess
a path can confirm it, so the audit log stays as access-controlled as the data it describes.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import fcntl
import getpass
import hashlib
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

from holoburn.clinical.errors import BadInput

#: `prev` of the first entry
GENESIS = "0" * 64
#: keys of an entry, in the order they are written
ENTRY_KEYS = ("seq", "time", "actor", "host", "pid", "action", "object", "details", "prev", "hash")
#: the actions holoburn writes (others are accepted; these are the vocabulary)
ACTIONS = (
    "read",  # a DICOM file was opened (de-identified in memory before any pixel was decoded)
    "deidentify",  # a de-identified copy was written
    "export",  # results derived from patient data were written (DICOM SEG / SC)
    "refuse_burned_in",  # an image flagged BurnedInAnnotation=YES was refused
    "override_burned_in",  # ... and accepted because the user passed an explicit override
)


def path_ref(path: str | os.PathLike) -> str:
    """A reference to a file path that does not reveal it: 'path-sha256:' + 16 hex digits.

    The SHA-256 is over the absolute path (UTF-8, undecodable bytes kept via surrogateescape).
    To find which file a reference names, compute `path_ref` of the candidate path.
    """
    absolute = os.path.abspath(os.fspath(path))
    digest = hashlib.sha256(absolute.encode("utf-8", "surrogateescape")).hexdigest()
    return f"path-sha256:{digest[:16]}"


def canonical_json(entry: dict) -> bytes:
    """The bytes an entry's hash is computed over: sorted keys, no spaces, UTF-8."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def entry_hash(entry: dict) -> str:
    """SHA-256 hex of the canonical JSON of `entry` without its `hash` key (`prev` included)."""
    return hashlib.sha256(canonical_json({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, ImportError, OSError):  # no user name in the environment or the password database:
        # KeyError from pwd (uid not listed), ImportError where there is no pwd module, OSError
        # from Python 3.13 on
        return f"uid:{os.getuid()}"


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AuditLog:
    """Appends hash-chained entries to one JSON-lines file; safe across threads and processes.

    >>> log = AuditLog("audit.jsonl")
    >>> log.append("read", {"file": path_ref(p), "sop_instance_uid": new_uid}, {"frames": 1})
    """

    def __init__(self, path: str | os.PathLike, actor: str | None = None):
        self.path = Path(path)
        self.actor = actor or _actor()
        self._host = socket.gethostname()
        self._thread_lock = threading.Lock()  # flock is per open file: threads need their own

    def append(self, action: str, object: Any, details: dict | None = None) -> dict:
        """Append one entry, fsync it, and return it (with `seq`, `prev` and `hash` filled in).

        `object` and `details` must be JSON-serialisable and hold no patient identifier.
        """
        if not action or not isinstance(action, str):
            raise ValueError(f"audit action must be a non-empty string, got {action!r}")
        with self._thread_lock:
            created = not self.path.exists()
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as error:  # a folder, a read-only place: the path the user gave is unusable
                raise BadInput(f"cannot write the audit log {self.path}: {error.strerror or error}; "
                               "give a writable file path (--audit-log, or dicom.audit_log in the config)") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    seq, prev, ends_with_newline = _tail_state(fd)
                    entry = {
                        "seq": seq,
                        "time": _utc_now(),
                        "actor": self.actor,
                        "host": self._host,
                        "pid": os.getpid(),
                        "action": action,
                        "object": object,
                        "details": details or {},
                        "prev": prev,
                    }
                    entry["hash"] = entry_hash(entry)
                    line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
                    # a crash mid-write leaves a partial last line: close it so the new entry
                    # starts on its own line (verify() still reports the partial one)
                    data = line.encode("utf-8") if ends_with_newline else b"\n" + line.encode("utf-8")
                    _write_all(fd, data)
                    os.fsync(fd)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
            if created:  # make the new directory entry itself durable
                _fsync_dir(self.path.parent)
        return entry

    def head(self) -> tuple[int, str]:
        """(number of entries, hash of the last one): store it elsewhere to detect tail removal."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return 0, GENESIS
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                seq, prev, _ = _tail_state(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return seq, prev


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # some file systems cannot sync a directory; the entry itself is synced
        pass
    finally:
        os.close(dir_fd)


def _tail_state(fd: int) -> tuple[int, str, bool]:
    """(next seq, hash of the last complete entry, whether the file ends with a newline).

    Reads backwards from the end until it finds a complete, parseable entry.
    """
    size = os.fstat(fd).st_size
    if size == 0:
        return 0, GENESIS, True
    ends_with_newline = os.pread(fd, 1, size - 1) == b"\n"
    chunk = 1 << 16
    buffer = b""
    position = size
    while position > 0:
        start = max(0, position - chunk)
        buffer = os.pread(fd, position - start, start) + buffer
        position = start
        lines = buffer.split(b"\n")
        # lines[0] may be incomplete unless we reached the start of the file
        candidates = lines if position == 0 else lines[1:]
        for raw in reversed(candidates):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
                return int(entry["seq"]) + 1, str(entry["hash"]), ends_with_newline
            except (ValueError, KeyError, TypeError):
                continue  # a partial or damaged line: chain from the last good entry
        if position == 0:
            break
        buffer = lines[0]
    return 0, GENESIS, ends_with_newline


def verify(path: str | os.PathLike, expect_head: tuple[int, str] | None = None) -> tuple[bool, list[str]]:
    """Check the whole chain of an audit log.

    Returns (ok, problems); each problem names its 1-based line number and what is wrong:
    a line that is not a JSON entry, a last line cut off (no newline), a hash that does not
    match the content (edited entry), a `prev` that does not match the entry before it
    (removed, inserted or reordered entry), or a `seq` out of order. `expect_head`, a
    `(count, last_hash)` recorded elsewhere, also detects entries removed from the end.
    """
    problems: list[str] = []
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        return False, [f"{path}: cannot read the audit log: {error.strerror or error}"]
    if not data:
        if expect_head and expect_head[0] > 0:
            problems.append(f"the log is empty but {expect_head[0]} entries were expected")
        return not problems, problems

    lines = data.split(b"\n")
    truncated_last = not data.endswith(b"\n")
    if not truncated_last:
        lines = lines[:-1]  # the empty string after the final newline

    prev_hash = GENESIS
    expected_seq = 0
    count = 0
    for number, raw in enumerate(lines, start=1):
        is_last = number == len(lines)
        if truncated_last and is_last:
            problems.append(
                f"line {number}: truncated last line ({len(raw)} bytes, no newline): "
                "a write was cut off or the file was cut"
            )
            try:
                json.loads(raw)
            except ValueError:
                continue  # nothing more to check on a partial line
        try:
            entry = json.loads(raw)
        except ValueError:
            problems.append(f"line {number}: not a JSON entry (damaged, or a partial write)")
            continue
        if not isinstance(entry, dict) or set(entry) != set(ENTRY_KEYS):
            keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            problems.append(f"line {number}: not an audit entry (keys {keys})")
            continue
        count += 1
        if entry["hash"] != entry_hash(entry):
            problems.append(
                f"line {number}: hash does not match the content (entry seq {entry['seq']} was edited)"
            )
        if entry["prev"] != prev_hash:
            problems.append(
                f"line {number}: prev does not match the hash of the entry before it "
                "(an entry was removed, inserted or reordered here)"
            )
        if entry["seq"] != expected_seq:
            problems.append(f"line {number}: seq {entry['seq']} where {expected_seq} was expected")
        # continue from this entry whatever it was, so one damage is reported once
        prev_hash = entry["hash"]
        expected_seq = entry["seq"] + 1 if isinstance(entry["seq"], int) else expected_seq + 1

    if expect_head is not None:
        expected_count, expected_hash = expect_head
        if (count, prev_hash) != (expected_count, expected_hash):
            problems.append(
                f"head is ({count} entries, {prev_hash[:16]}...) but ({expected_count} entries, "
                f"{expected_hash[:16]}...) was recorded: entries were removed from or added "
                "at the end"
            )
    return not problems, problems


# -- `holoburn audit verify LOG` ---------------------------------------------------------------


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `holoburn audit verify`."""
    parser.add_argument("log", type=Path, help="audit log (JSON lines) to check")
    parser.add_argument(
        "--expect-head",
        metavar="COUNT:HASH",
        help="entry count and last hash recorded elsewhere; detects entries removed from the end",
    )


def run_verify(args: argparse.Namespace) -> int:
    """Print the verdict; exit status 0 when the chain is intact, 1 when not."""
    expect = None
    if args.expect_head:
        count, _, last = args.expect_head.partition(":")
        if not count.isdigit() or len(last) != 64:
            print(f"--expect-head {args.expect_head!r}: expected COUNT:HASH (64 hex digits)")
            return 2
        expect = (int(count), last)
    ok, problems = verify(args.log, expect_head=expect)
    for problem in problems:
        print(f"{args.log}: {problem}")
    print(f"{args.log}: {'chain intact' if ok else f'{len(problems)} problem(s): NOT intact'}")
    return 0 if ok else 1
