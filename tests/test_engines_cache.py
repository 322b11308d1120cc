"""Engine cache: keys, atomic writes, corrupt and foreign entries, read-only model folders."""
from __future__ import annotations

import json
import os
import threading
from dataclasses import replace

import pytest

from holoburn.engines.cache import EngineCache, EngineKey, cache_root
from holoburn.processing.files import atomic_write
from test_engines_support import engine_data, pixel_card  # noqa: F401  (fixtures)

KEY = EngineKey(
    model_sha256="a" * 64, backend="tensorrt-rtx", backend_version="1.7.1.116", gpu_name="NVIDIA RTX 6000 Ada",
    compute_capability="8.9", sm_count=142, precision="fp16", profile="b1-1:224-512-1024",
)


@pytest.fixture(autouse=True)
def cache_key(tmp_path_factory, monkeypatch):
    """Each test signs with a key of its own, outside its cache folder."""
    path = tmp_path_factory.mktemp("key") / "cache.key"
    monkeypatch.setenv("HOLOBURN_CACHE_KEY", str(path))
    return path


def test_key_changes_with_every_field():
    digests = {KEY.digest()}
    for name, value in (
        ("model_sha256", "b" * 64), ("backend", "tensorrt"), ("backend_version", "10.3.0"), ("gpu_name", "Orin"),
        ("compute_capability", "8.7"), ("sm_count", 16), ("precision", "int8"), ("profile", "b1-4:224-512-1024"),
        ("recipe", "x"),
    ):
        digests.add(replace(KEY, **{name: value}).digest())
    assert len(digests) == 10
    assert KEY.digest() == EngineKey(**KEY.fields()).digest()  # stable


def test_cache_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("HOLOBURN_ENGINE_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("HOLOBURN_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "holoburn" / "engines"


def test_store_lookup_round_trip(tmp_path):
    cache = EngineCache(tmp_path)
    entry = cache.store(KEY, b"engine bytes", model_id="m", meta={"why": "test"})
    found = cache.lookup(KEY)
    assert found is not None and found.payload_path.read_bytes() == b"engine bytes"
    assert found.header["key"] == KEY.fields() and found.header["payload_sha256"]
    assert entry.header_path == cache.header_path(KEY, "m")
    assert cache.lookup(replace(KEY, precision="int8")) is None
    # replacing an entry removes the old payload
    cache.store(KEY, b"new engine bytes", model_id="m")
    assert cache.lookup(KEY).payload_path.read_bytes() == b"new engine bytes"
    assert len(list(tmp_path.glob("*.engine"))) == 1


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "plan.engine"
    atomic_write(target, b"old")

    def failing_writer(f):
        f.write(b"half of a new eng")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, failing_writer)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.engine"]  # no temp file left behind


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_payload", "garbage_header"])
def test_corrupt_entry_is_detected_and_dropped(tmp_path, damage):
    cache = EngineCache(tmp_path)
    entry = cache.store(KEY, bytes(range(256)) * 64, model_id="m")
    payload = entry.payload_path
    if damage == "truncate":
        payload.write_bytes(payload.read_bytes()[:1000])
    elif damage == "flip":
        data = bytearray(payload.read_bytes())
        data[500] ^= 0xFF
        payload.write_bytes(bytes(data))
    elif damage == "delete_payload":
        payload.unlink()
    else:
        entry.header_path.write_text("{not json")
    bad = cache.inspect(entry.header_path)
    assert not bad.ok and bad.problem
    assert cache.lookup(KEY) is None  # a miss, so the caller rebuilds
    assert not entry.header_path.exists()
    entry, hit = cache.get_or_build(KEY, lambda: b"rebuilt", model_id="m")
    assert not hit and entry.payload_path.read_bytes() == b"rebuilt"


def test_foreign_entries_are_refused(tmp_path):
    cache = EngineCache(tmp_path)
    entry = cache.store(KEY, b"plan for an Ada GPU", model_id="m")
    # a sound entry of another GPU renamed to pass for this key: its key fields do not hash to its name
    other_gpu = replace(KEY, gpu_name="Orin")
    copied = cache.store(other_gpu, b"plan for an Orin", model_id="m")
    entry.header_path.unlink()
    copied.header_path.rename(entry.header_path)
    assert cache.inspect(entry.header_path).problem.startswith("foreign entry")
    assert cache.lookup(KEY) is None
    # a sound entry of another key is not taken for this one
    other = replace(KEY, sm_count=16)
    cache.store(other, b"plan", model_id="m")
    assert cache.inspect(cache.header_path(other, "m"), expected=KEY).problem == "foreign entry: built for another key"


def test_concurrent_writers_leave_one_sound_entry(tmp_path):
    cache = EngineCache(tmp_path)
    errors = []

    def writer(i):
        try:
            for j in range(20):
                cache.store(KEY, f"engine from writer {i} round {j}".encode() * 100, model_id="m")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    entry = cache.lookup(KEY)
    assert entry is not None and entry.ok
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_clear_and_orphans(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"a", model_id="m")
    cache.store(replace(KEY, precision="int8"), b"b", model_id="m")
    (tmp_path / "m-stray.123.engine").write_bytes(b"left by a crash")
    assert [p.name for p in cache.orphans()] == ["m-stray.123.engine"]
    assert cache.clear(lambda e: e.key["precision"] == "int8") == 1
    assert cache.lookup(KEY) is not None
    assert cache.clear() == 1
    assert list(tmp_path.iterdir()) == []


def test_read_only_model_folder(tmp_path, monkeypatch, pixel_card, engine_data):
    """Converting a model whose folder is read-only writes only to the cache."""
    import shutil

    from holoburn.engines.card import load_card
    from holoburn.engines.precision import build_precision_model, model_for_precision

    model_dir = tmp_path / "readonly-model"
    shutil.copytree(pixel_card.parent, model_dir)
    before = sorted(p.name for p in model_dir.iterdir())
    os.chmod(model_dir, 0o555)
    try:
        card = load_card(model_dir / pixel_card.name)
        cache = tmp_path / "cache"
        result = build_precision_model(card, "fp16", engine_data["holdout"][:6], cache=cache)
        assert result.path.parent == cache and result.path.is_file()
        assert model_for_precision(card, "fp16", cache) == result.path
        # (root ignores permission bits, so also check that nothing appeared beside the model)
        assert sorted(p.name for p in model_dir.iterdir()) == before
    finally:
        os.chmod(model_dir, 0o755)
