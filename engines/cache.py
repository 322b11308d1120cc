"""The engine cache: built engines and converted models, keyed by everything that makes them valid.

Layout under the cache root (`$HOLOBURN_ENGINE_CACHE`, else `$XDG_CACHE_HOME/holoburn/engines`,
else `~/.cache/holoburn/engines`; never beside the model, whose directory may be read-only):

    <stem>.json                 header: key fields, payload file name, size and sha256 (the commit
                                record), signed with an HMAC-SHA256 under the cache key
    <stem>.<sha12><suffix>      payload: the engine plan or the converted ONNX
    <stem>.gate.md / .gate.json accuracy-gate table of the last build of that key, accepted or not
    timing/                     TensorRT timing caches and TensorRT-RTX runtime caches

`stem` is `<model_id>-<backend>-<precision>-<digest16>`, where digest is the sha256 of the key
fields, so a renamed or copied-in file cannot pass for another key. Every write is atomic (temp
file in the same directory, fsync, os.replace, fsync of the directory); the payload is written
first and the header last, so a reader sees either the old entry, the new one or none, and two
processes building the same key at once each leave a complete entry.

Every lookup re-hashes the payload and compares it with the sha256 recorded in the header, and the
header itself carries an HMAC-SHA256 (over every field: key, payload name, size, sha256, meta)
under a secret key kept outside the cache: `$HOLOBURN_CACHE_KEY`, else
`$XDG_CONFIG_HOME/holoburn/cache.key`, else `~/.config/holoburn/cache.key`, made (mode 0600) on
first use. So bytes changed in the cache, with or without a matching sha256 written into the
header, are not reused: an entry that is unsigned, signed under another key, whose payload is
missing, of the wrong size or the wrong sha256 is corrupt; lookups log it (by entry, which names
the model, never a patient), delete it and answer "miss", so the caller rebuilds instead of
trusting it. A lost key only costs a rebuild of every entry.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from holoburn.clinical.errors import BadInput
from holoburn.engines.card import file_sha256
from holoburn.processing.files import atomic_write

log = logging.getLogger("holoburn.engines.cache")

ENV_VAR = "HOLOBURN_ENGINE_CACHE"
KEY_ENV_VAR = "HOLOBURN_CACHE_KEY"
FORMAT = "holoburn-engine-cache/2"  # /1 had no HMAC: its entries are rebuilt
HEADER_SUFFIX = ".json"


class EngineCacheError(BadInput):
    """The cache folder, its key file, or a payload handed to the cache cannot be used: the
    message names the path and what to do."""


def cache_root(explicit: str | os.PathLike | None = None) -> Path:
    """The cache directory: `explicit`, else $HOLOBURN_ENGINE_CACHE, else the user cache dir."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "holoburn" / "engines"


def key_path(explicit: str | os.PathLike | None = None) -> Path:
    """The cache key file: `explicit`, else $HOLOBURN_CACHE_KEY, else the user config dir."""
    if explicit or os.environ.get(KEY_ENV_VAR):
        return Path(explicit or os.environ[KEY_ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "holoburn" / "cache.key"


def load_or_create_key(path: Path) -> bytes:
    """The 32-byte secret in `path` (64 hex digits), made with mode 0600 if there is none yet.

    A new key is written to a temporary file and hard-linked into place, so two processes
    starting at once end up with the same key.
    """
    if not path.exists():
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
            tmp = Path(tmp)
            with os.fdopen(fd, "w") as f:
                f.write(os.urandom(32).hex() + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
                log.info("engine cache: made a new cache key %s", path)
            except FileExistsError:
                pass  # another process made it first: use theirs
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise EngineCacheError(f"cannot create the engine cache key {path} ({exc.strerror}); "
                                   f"make its folder writable or point ${KEY_ENV_VAR} at a writable path") from None
    if path.is_dir():
        raise EngineCacheError(f"the engine cache key {path} is a folder, not a file; remove it or point ${KEY_ENV_VAR} at a file")
    try:
        key = bytes.fromhex(path.read_text().strip())
    except OSError as exc:
        raise EngineCacheError(f"cannot read the engine cache key {path} ({exc.strerror}); fix its permissions "
                               f"or point ${KEY_ENV_VAR} at a readable key file") from None
    except ValueError:
        key = b""
    if len(key) != 32:
        raise EngineCacheError(f"the engine cache key {path} is not 64 hex digits; delete it to make a new one "
                               "(every cached entry is then rebuilt once)")
    if path.stat().st_mode & 0o077:
        log.warning("engine cache: the cache key %s is readable by other users; chmod 600 it", path)
    return key


@dataclass(frozen=True)
class EngineKey:
    """Everything that decides whether a cached artefact can be used here.

    model_sha256: sha256 of the ONNX the artefact was made from. backend: e.g. "tensorrt-rtx" or
    "onnx-int8" for a converted model. gpu_name / compute_capability / sm_count: the device it was
    built for ("any" for device-independent artefacts). profile: the optimization profile, e.g.
    "b1-4:224-512-1024"; recipe: a digest of the conversion settings (calibration method, layers
    kept in higher precision, ...), "" when there are none.
    """

    model_sha256: str
    backend: str
    backend_version: str
    gpu_name: str
    compute_capability: str
    sm_count: int
    precision: str
    profile: str
    recipe: str = ""

    def digest(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def fields(self) -> dict:
        return asdict(self)


@dataclass
class CacheEntry:
    """One entry as found on disk. `problem` is None for a sound entry, else what is wrong."""

    header_path: Path
    header: dict = field(default_factory=dict)
    problem: str | None = None

    @property
    def payload_path(self) -> Path | None:
        name = self.header.get("payload")
        return self.header_path.parent / name if name else None

    @property
    def stem(self) -> str:
        return self.header_path.name[: -len(HEADER_SUFFIX)]

    @property
    def key(self) -> dict:
        return self.header.get("key", {})

    @property
    def ok(self) -> bool:
        return self.problem is None


def _read_payload(path: Path) -> bytes:
    if path.is_dir():
        raise EngineCacheError(f"payload {path} is a folder, not a file; pass the engine or model file itself")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise EngineCacheError(f"cannot read the payload {path} ({exc.strerror}); pass a readable engine or model file") from None


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in text)[:48]


class EngineCache:
    """A directory of keyed artefacts (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike | None = None, key_file: str | os.PathLike | None = None):
        self.root = cache_root(root)
        self.key_file = key_path(key_file)
        self._key: bytes | None = None

    # -- authentication ------------------------------------------------------------------------
    def _signature(self, header: dict) -> str:
        """HMAC-SHA256 of every header field but the signature itself, in canonical JSON."""
        if self._key is None:
            if self.root.resolve() in self.key_file.resolve().parents:
                raise EngineCacheError(f"the engine cache key {self.key_file} lies inside the cache {self.root}, where "
                                       f"whoever can change an entry can also sign it; point ${KEY_ENV_VAR} outside the cache")
            self._key = load_or_create_key(self.key_file)
        signed = {k: v for k, v in header.items() if k != "hmac"}
        message = json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    # -- the folder ----------------------------------------------------------------------------
    def _names(self) -> list[str]:
        """The file names in the cache folder, less hidden ones (writes in progress); none when
        the folder does not exist yet."""
        try:
            return sorted(n for n in os.listdir(self.root) if not n.startswith("."))
        except FileNotFoundError:
            return []
        except NotADirectoryError:
            raise EngineCacheError(f"the engine cache {self.root} is a file (or lies under one), not a folder; point --cache-dir or "
                                   f"${ENV_VAR} at a folder, or move that file away") from None
        except OSError as exc:
            raise EngineCacheError(f"cannot read the engine cache {self.root} ({exc.strerror}); fix its permissions "
                                   f"or point --cache-dir or ${ENV_VAR} at another folder") from None

    def _make_root(self) -> None:
        self._names()  # a file in the way is named as such
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EngineCacheError(f"cannot create the engine cache {self.root} ({exc.strerror}); point --cache-dir "
                                   f"or ${ENV_VAR} at a writable folder") from None

    # -- names ---------------------------------------------------------------------------------
    def stem(self, key: EngineKey, model_id: str = "model") -> str:
        return f"{_safe(model_id)}-{_safe(key.backend)}-{_safe(key.precision)}-{key.digest()[:16]}"

    def header_path(self, key: EngineKey, model_id: str = "model") -> Path:
        return self.root / (self.stem(key, model_id) + HEADER_SUFFIX)

    def report_base(self, key: EngineKey, model_id: str = "model") -> Path:
        """Where the accuracy-gate table of this key goes: `<base>.gate.md` and `<base>.gate.json`."""
        return self.root / self.stem(key, model_id)

    def timing_dir(self) -> Path:
        return self.root / "timing"

    def _find_header(self, key: EngineKey) -> Path | None:
        ending = f"-{key.digest()[:16]}{HEADER_SUFFIX}"
        return next((self.root / n for n in self._names() if n.endswith(ending)), None)

    # -- reading -------------------------------------------------------------------------------
    def inspect(self, header_path: Path, expected: EngineKey | None = None, check_sha: bool = True) -> CacheEntry:
        """Read and check one entry: header readable, key consistent, payload complete and intact."""
        entry = CacheEntry(Path(header_path))
        try:
            entry.header = json.loads(entry.header_path.read_text())
        except (OSError, ValueError) as exc:
            entry.problem = f"header unreadable ({exc.__class__.__name__}: {exc})"
            return entry
        if not isinstance(entry.header, dict) or entry.header.get("format") != FORMAT:
            entry.header = entry.header if isinstance(entry.header, dict) else {}
            found = entry.header.get("format")
            entry.problem = (f"written by an older holoburn ({found}), without authentication" if str(found).startswith("holoburn-engine-cache/")
                             else f"not a holoburn cache header (format {found!r})")
            return entry
        if not hmac.compare_digest(str(entry.header.get("hmac", "")), self._signature(entry.header)):
            entry.problem = (f"authentication failed: its HMAC does not verify under the cache key {self.key_file} "
                             "(edited, copied from another machine, or signed with another key)")
            return entry
        try:
            stored_key = EngineKey(**entry.header["key"])
        except (KeyError, TypeError) as exc:
            entry.problem = f"header key malformed ({exc})"
            return entry
        if not entry.stem.endswith(stored_key.digest()[:16]):
            entry.problem = "foreign entry: its key fields do not hash to its file name"
            return entry
        if expected is not None and stored_key != expected:
            entry.problem = "foreign entry: built for another key"
            return entry
        payload = entry.payload_path
        if payload is not None and payload.is_dir():
            entry.problem = f"payload {payload} is a folder, not a file; delete that folder (the entry is rebuilt)"
            return entry
        if payload is None or not payload.is_file():
            entry.problem = f"payload {entry.header.get('payload')!r} missing"
            return entry
        size = payload.stat().st_size
        if size != entry.header.get("payload_bytes"):
            entry.problem = f"payload truncated or replaced: {size} bytes, header says {entry.header.get('payload_bytes')}"
            return entry
        if check_sha and file_sha256(payload) != entry.header.get("payload_sha256"):
            entry.problem = "payload sha256 does not match its header (corrupt or foreign bytes)"
        return entry

    def lookup(self, key: EngineKey) -> CacheEntry | None:
        """The sound entry for `key`, or None. A corrupt entry is logged and removed (rebuild, don't trust)."""
        header = self._find_header(key)
        if header is None:
            return None
        entry = self.inspect(header, expected=key)
        if entry.ok:
            return entry
        log.warning("engine cache: discarding %s: %s; it will be rebuilt", header, entry.problem)
        self.remove(entry)
        return None

    def entries(self, check_sha: bool = True) -> Iterator[CacheEntry]:
        """Every entry, checked (its payload re-hashed only with check_sha)."""
        for name in self._names():
            if name.endswith(HEADER_SUFFIX) and not name.endswith(".gate.json"):
                yield self.inspect(self.root / name, check_sha=check_sha)

    def orphans(self) -> list[Path]:
        """Payload files that no header names (left by an interrupted or superseded write)."""
        named = {e.header.get("payload") for e in self.entries(check_sha=False)}
        paths = (self.root / n for n in self._names() if not n.endswith((HEADER_SUFFIX, ".gate.md")) and n not in named)
        return [p for p in paths if p.is_file()]

    # -- writing -------------------------------------------------------------------------------
    def store(self, key: EngineKey, payload: bytes | Path, *, model_id: str = "model", suffix: str = ".engine", meta: dict | None = None) -> CacheEntry:
        """Store `payload` (bytes or a file to copy) under `key`, atomically; return the entry."""
        if isinstance(payload, (str, os.PathLike)):
            payload = _read_payload(Path(payload))
        self._make_root()
        payload_sha = hashlib.sha256(payload).hexdigest()
        stem = self.stem(key, model_id)
        payload_name = f"{stem}.{payload_sha[:12]}{suffix}"
        if (self.root / payload_name).is_dir():
            raise EngineCacheError(f"{self.root / payload_name} is a folder where the cache keeps a file; delete that folder")
        previous = self._find_header(key)
        previous_payload = None
        if previous is not None:
            try:
                previous_payload = json.loads(previous.read_text()).get("payload")
            except (OSError, ValueError):
                pass
        atomic_write(self.root / payload_name, payload)
        header = {
            "format": FORMAT,
            "key": key.fields(),
            "key_sha256": key.digest(),
            "model_id": model_id,
            "payload": payload_name,
            "payload_bytes": len(payload),
            "payload_sha256": payload_sha,
            "created_unix": time.time(),
            "meta": meta or {},
        }
        header = json.loads(json.dumps(header))  # sign exactly what a reader will load
        header["hmac"] = self._signature(header)
        header_path = self.root / (stem + HEADER_SUFFIX)
        atomic_write(header_path, json.dumps(header, indent=1, sort_keys=True).encode())
        if previous_payload and previous_payload != payload_name:
            (self.root / previous_payload).unlink(missing_ok=True)
        return CacheEntry(header_path, header)

    def remove(self, entry: CacheEntry) -> None:
        """Delete an entry's header and payload, unless another writer has replaced it meanwhile."""
        payload = entry.payload_path
        if payload is not None:
            try:
                current = json.loads(entry.header_path.read_text()).get("payload")
            except (OSError, ValueError, AttributeError):
                current = payload.name
            if current != payload.name:
                return  # a newer entry took this key after we read it: leave it alone
        entry.header_path.unlink(missing_ok=True)
        if payload is not None and payload.parent == self.root and not payload.is_dir():
            payload.unlink(missing_ok=True)

    def clear(self, predicate: Callable[[CacheEntry], bool] | None = None) -> int:
        """Remove entries (all, or those `predicate` accepts) and orphaned payloads; return the count."""
        removed = 0
        for entry in list(self.entries(check_sha=False)):
            if predicate is None or predicate(entry):
                self.remove(entry)
                for extra in (".gate.md", ".gate.json"):
                    (self.root / (entry.stem + extra)).unlink(missing_ok=True)
                removed += 1
        if predicate is None:
            for path in self.orphans():
                path.unlink(missing_ok=True)
            for name in self._names():
                if ".gate." in name:
                    (self.root / name).unlink(missing_ok=True)
        return removed

    def get_or_build(self, key: EngineKey, build: Callable[[], bytes], *, model_id: str = "model", suffix: str = ".engine", meta: dict | None = None) -> tuple[CacheEntry, bool]:
        """The entry for `key`, building and storing it on a miss. Returns (entry, was_hit)."""
        entry = self.lookup(key)
        if entry is not None:
            return entry, True
        return self.store(key, build(), model_id=model_id, suffix=suffix, meta=meta), False
