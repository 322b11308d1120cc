"""Issue #13: a cached engine or model whose bytes changed is detected and rebuilt, never reused;
entries are signed (HMAC-SHA256) under a key kept outside the cache; paths that cannot be a cache
or a payload are named; `engine verify` on an empty or unreadable cache does not say "ok"; the
gate names untested classes as untested, not as losses; BackendUnavailable exits 3 everywhere;
the image entrypoint warns of a TensorRT build only for a TensorRT backend. Real files in tmp dirs.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from holoburn.clinical.errors import BackendFailure
from holoburn.engines.cache import EngineCache, EngineCacheError, EngineKey
from holoburn.engines.gate import Scores, compare
from holoburn.engines.toolchain import EXIT_FAILED, EXIT_INPUT, EXIT_OK, EXIT_REFUSED, add_engine_arguments, run_engine
from test_engines_support import CLASSES, engine_cache, engine_data, pixel_card, write_labelled_dir  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
KEY = EngineKey(
    model_sha256="a" * 64, backend="tensorrt", backend_version="10.3.0", gpu_name="NVIDIA H200",
    compute_capability="9.0", sm_count=132, precision="fp16", profile="b1-1:224-512-1024",
)
PAYLOAD = bytes(range(256)) * 64


@pytest.fixture(autouse=True)
def cache_key(tmp_path, monkeypatch):
    """Each test signs with a key of its own, beside (never inside) its cache."""
    path = tmp_path / "keys" / "cache.key"
    monkeypatch.setenv("HOLOBURN_CACHE_KEY", str(path))
    return path


def cli(*argv) -> int:
    main = argparse.ArgumentParser(prog="holoburn")
    add_engine_arguments(main.add_subparsers(dest="command"))
    return run_engine(main.parse_args(["engine", *map(str, argv)]))


def flip_a_byte(path: Path, at: int = 500) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


# -- integrity and authentication ---------------------------------------------------------------
def test_a_flipped_byte_is_detected_logged_by_entry_and_rebuilt(tmp_path, caplog):
    cache = EngineCache(tmp_path / "cache")
    entry = cache.store(KEY, PAYLOAD, model_id="burn_unet_v1")
    assert cache.lookup(KEY).ok
    flip_a_byte(entry.payload_path)
    with caplog.at_level(logging.WARNING, logger="holoburn.engines.cache"):
        rebuilt, hit = cache.get_or_build(KEY, lambda: b"rebuilt engine", model_id="burn_unet_v1")
    assert not hit and rebuilt.payload_path.read_bytes() == b"rebuilt engine"
    [line] = [r.getMessage() for r in caplog.records]
    assert entry.header_path.name in line and "sha256 does not match" in line and "rebuilt" in line
    assert cache.lookup(KEY).ok


def test_changed_bytes_with_a_matching_sha256_in_the_header_are_refused(tmp_path):
    """Someone who can write the cache but has not the key: new bytes, their sha256 and size in the header."""
    cache = EngineCache(tmp_path / "cache")
    entry = cache.store(KEY, PAYLOAD, model_id="m")
    forged = b"an engine from somewhere else"
    entry.payload_path.write_bytes(forged)
    header = json.loads(entry.header_path.read_text())
    header.update(payload_sha256=hashlib.sha256(forged).hexdigest(), payload_bytes=len(forged))
    entry.header_path.write_text(json.dumps(header))
    problem = cache.inspect(entry.header_path).problem
    assert problem.startswith("authentication failed") and str(cache.key_file) in problem
    rebuilt, hit = cache.get_or_build(KEY, lambda: PAYLOAD, model_id="m")
    assert not hit and rebuilt.payload_path.read_bytes() == PAYLOAD


@pytest.mark.parametrize("forgery", ["wrong_hmac", "no_hmac", "older_format"])
def test_a_forged_or_unsigned_entry_is_refused(tmp_path, forgery):
    cache = EngineCache(tmp_path / "cache")
    entry = cache.store(KEY, PAYLOAD, model_id="m")
    header = json.loads(entry.header_path.read_text())
    if forgery == "wrong_hmac":
        header["hmac"] = "0" * 64
    elif forgery == "no_hmac":
        del header["hmac"]
    else:  # what holoburn wrote before entries were signed
        header.pop("hmac")
        header["format"] = "holoburn-engine-cache/1"
    entry.header_path.write_text(json.dumps(header))
    problem = cache.inspect(entry.header_path).problem
    assert problem.startswith("written by an older holoburn" if forgery == "older_format" else "authentication failed")
    assert cache.lookup(KEY) is None and not entry.header_path.exists()


def test_an_entry_signed_with_another_key_is_refused(tmp_path):
    root = tmp_path / "cache"
    EngineCache(root, key_file=tmp_path / "machine-a.key").store(KEY, PAYLOAD, model_id="m")
    here = EngineCache(root, key_file=tmp_path / "machine-b.key")
    assert here.inspect(here.header_path(KEY, "m")).problem.startswith("authentication failed")
    assert here.lookup(KEY) is None
    assert EngineCache(root, key_file=tmp_path / "machine-a.key").lookup(KEY) is None  # removed, not kept


def test_the_key_is_made_once_with_mode_0600_in_the_user_config_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("HOLOBURN_CACHE_KEY")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    cache = EngineCache(tmp_path / "cache")
    cache.store(KEY, PAYLOAD, model_id="m")
    key_file = tmp_path / "config" / "holoburn" / "cache.key"
    assert cache.key_file == key_file and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(bytes.fromhex(key_file.read_text().strip())) == 32
    made = key_file.read_text()
    assert EngineCache(tmp_path / "cache").lookup(KEY).ok and key_file.read_text() == made  # reused, not remade
    assert not list((tmp_path / "cache").glob("*.key"))


@pytest.mark.parametrize("case", ["garbage", "folder", "inside_the_cache"])
def test_an_unusable_key_is_named(tmp_path, case):
    root = tmp_path / "cache"
    key_file = tmp_path / "cache.key"
    if case == "garbage":
        key_file.write_text("not a key")
    elif case == "folder":
        key_file.mkdir()
    else:
        key_file = root / "cache.key"
    with pytest.raises(EngineCacheError) as raised:
        EngineCache(root, key_file=key_file).store(KEY, PAYLOAD)
    assert str(key_file) in str(raised.value)


# -- paths that cannot be a payload or a cache ---------------------------------------------------
def test_a_folder_as_payload_is_named(tmp_path):
    folder = tmp_path / "model.engine"
    folder.mkdir()
    with pytest.raises(EngineCacheError, match="is a folder, not a file") as raised:
        EngineCache(tmp_path / "cache").store(KEY, folder)
    assert str(folder) in str(raised.value)


def test_a_folder_where_the_cache_keeps_a_payload_is_a_bad_entry(tmp_path):
    cache = EngineCache(tmp_path / "cache")
    entry = cache.store(KEY, PAYLOAD, model_id="m")
    entry.payload_path.unlink()
    entry.payload_path.mkdir()
    problem = cache.inspect(entry.header_path).problem
    assert str(entry.payload_path) in problem and "is a folder" in problem
    assert cache.lookup(KEY) is None and entry.payload_path.is_dir()  # header dropped; the folder is left to the user
    with pytest.raises(EngineCacheError, match="delete that folder"):
        cache.store(KEY, PAYLOAD, model_id="m")


def test_a_file_as_cache_path_is_named_by_every_use(tmp_path, capsys):
    path = tmp_path / "engines"
    path.write_text("not a folder")
    cache = EngineCache(path)
    for use in (lambda: cache.lookup(KEY), lambda: cache.store(KEY, PAYLOAD), lambda: list(cache.entries())):
        with pytest.raises(EngineCacheError, match="is a file") as raised:
            use()
        assert str(path) in str(raised.value)
    for command in ("verify", "list", "clear"):
        assert cli(command, "--cache-dir", path) == EXIT_INPUT
        err = capsys.readouterr().err
        assert str(path) in err and "is a file" in err and "0 entries" not in err


# -- engine verify -------------------------------------------------------------------------------
def test_verify_an_empty_or_missing_cache_is_not_ok(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli("verify", "--cache-dir", tmp_path / "empty") == EXIT_FAILED
    out = capsys.readouterr().out
    assert "is empty" in out and "nothing to verify" in out and "0 bad" not in out
    assert cli("verify", "--cache-dir", tmp_path / "missing") == EXIT_FAILED
    assert "does not exist" in capsys.readouterr().out
    assert cli("verify", "--cache-dir", tmp_path / "empty", "--json") == EXIT_FAILED
    assert json.loads(capsys.readouterr().out)["empty"] is True


def test_verify_an_unreadable_cache_is_a_named_error(tmp_path, monkeypatch, capsys):
    """Tests run as root, which reads any folder: a listing that fails stands for chmod 000."""
    root = tmp_path / "cache"
    EngineCache(root).store(KEY, PAYLOAD)
    real_listdir = os.listdir

    def denied(path="."):
        if Path(path) == root:
            raise PermissionError(13, "Permission denied", str(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", denied)
    assert cli("verify", "--cache-dir", root) == EXIT_INPUT
    err = capsys.readouterr().err
    assert str(root) in err and "Permission denied" in err


def test_verify_reports_corrupt_headers_and_forged_entries(tmp_path, capsys):
    cache = EngineCache(tmp_path / "cache")
    good = cache.store(KEY, PAYLOAD, model_id="m")
    assert cli("verify", "--cache-dir", cache.root) == EXIT_OK
    assert "1 entries, 0 bad" in capsys.readouterr().out
    forged = cache.store(replace(KEY, precision="int8"), PAYLOAD, model_id="m")
    flip_a_byte(forged.payload_path)
    (cache.root / "m-tensorrt-fp32-0123456789abcdef.json").write_text("{not json")
    assert cli("verify", "--cache-dir", cache.root) == EXIT_FAILED
    out = capsys.readouterr().out
    assert "3 entries, 2 bad" in out and "sha256 does not match" in out and "header unreadable" in out
    assert cli("verify", "--cache-dir", cache.root, "--remove-bad") == EXIT_FAILED
    capsys.readouterr()
    assert [e.header_path for e in cache.entries()] == [good.header_path]


# -- the gate's message --------------------------------------------------------------------------
def _scores(rows: dict[int, tuple[int, int]]) -> Scores:
    """Per class index: (truth pixels, of which predicted right); the misses go to background."""
    confusion = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    for index, (truth, right) in rows.items():
        confusion[index, index] = right
        confusion[index, 0] += truth - right
    return Scores(confusion, [2, 3, 4, 5])


def test_the_gate_names_untested_classes_and_never_as_a_loss():
    card = SimpleNamespace(classes=CLASSES)
    # superficial (2) and superficial_partial (3) are absent from the held-out truth
    reference = _scores({0: (1000, 1000), 1: (500, 500), 4: (400, 400), 5: (300, 300)})
    candidate = _scores({0: (1000, 1000), 1: (500, 500), 4: (400, 360), 5: (300, 300)})
    report = compare(card, reference, candidate, "int8", max_drop_points=1.0)
    assert report.untested() == ["superficial", "superficial_partial"] and report.lost() == ["deep_partial", "any_burn"]
    reason = report.reason()
    lost_part = reason.split("Within")[0]
    assert "deep_partial" in lost_part and "superficial" not in lost_part
    assert "Not tested" in reason and "superficial, superficial_partial" in reason and "full_thickness" in reason
    assert "REFUSED: " + reason in report.to_markdown()
    # no loss, only untested classes: refused for that reason alone, and it says so
    report = compare(card, reference, reference, "fp16", max_drop_points=1.0)
    assert not report.passed and not report.lost() and "Lost" not in report.reason()
    assert report.to_json()["untested"] == ["superficial", "superficial_partial"]
    # with require_all_classes off the same set passes, and the acceptance still names what was not tested
    report = compare(card, reference, reference, "fp16", max_drop_points=1.0, require_all_classes=False)
    assert report.passed and "| superficial |" in report.to_markdown()
    assert "ACCEPTED: " in report.to_markdown() and "Not tested" in report.reason() and "require_all_classes is off" in report.reason()


def test_engine_build_refusal_for_an_incomplete_holdout_says_untested(engine_cache, pixel_card, engine_data, tmp_path, capsys):
    no_superficial = [(f, np.where((m == 2) | (m == 3), 1, m).astype(np.uint8)) for f, m in engine_data["holdout"][:8]]
    holdout = write_labelled_dir(tmp_path / "holdout", no_superficial)
    assert cli("build", "--model", pixel_card, "--backend", "onnxruntime", "--precision", "fp16", "--holdout", holdout) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "REFUSED" in err and "Not tested" in err and "superficial, superficial_partial" in err
    assert "Lost more than" not in err and "calibration-method" not in err and "--holdout whose masks" in err


# -- one exit code for BackendUnavailable --------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here: nothing is unavailable")
def test_backend_unavailable_exits_3_from_run_and_from_engine(tiny_card, red_green_video, tmp_path):
    from holoburn.engines.backend import BackendUnavailable

    assert issubclass(BackendUnavailable, BackendFailure) and BackendUnavailable.exit_code == 3
    env = {**os.environ, "HOLOBURN_ENGINE_CACHE": str(tmp_path / "cache")}
    for argv in (["run", "--source", f"video:{red_green_video}", "--model", tiny_card, "--backend", "tensorrt", "--out", tmp_path / "out"],
                 ["engine", "build", "--model", tiny_card, "--backend", "tensorrt"]):
        result = subprocess.run([sys.executable, "-m", "holoburn.app", *map(str, argv)], capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 3, (argv[0], result.returncode, result.stderr)
        assert "tensorrt is not installed" in result.stderr and "Traceback" not in result.stderr


# -- the image entrypoint ------------------------------------------------------------------------
@pytest.fixture
def entrypoint(tmp_path):
    """Run deploy/entrypoint.sh with a stand-in `holoburn` (logs its arguments) first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "holoburn").write_text(f'#!/usr/bin/env bash\necho "$*" >> "{tmp_path / "calls.log"}"\n')
    (bin_dir / "holoburn").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOLOBURN_ENGINE_CACHE": str(tmp_path / "cache"),
           "HOLOBURN_CACHE_KEY": str(tmp_path / "keys" / "cache.key")}

    def run(*args):
        return subprocess.run(["bash", str(ROOT / "deploy" / "entrypoint.sh"), *args], env=env, capture_output=True, text=True, timeout=60)

    return run


@pytest.mark.parametrize("args, warns", [
    (["run", "--backend", "tensorrt"], True),
    (["run", "--backend=tensorrt-rtx"], True),
    (["run", "--backend", "onnxruntime"], False),
    (["run", "--config", "replay-validation.yaml"], False),  # a preset whose backend is onnxruntime
    (["run", "--config=jetson-orin.yaml"], True),  # backend: tensorrt
    (["run", "--config", "jetson-orin.yaml", "--backend", "torch"], False),  # the option wins over the file
])
def test_entrypoint_warns_of_an_engine_build_only_for_tensorrt(entrypoint, args, warns):
    result = entrypoint(*args, "--source", "video:a.mp4", "--out", "/o")
    assert result.returncode == 0, result.stderr
    assert ("is empty: the first run builds" in result.stderr) == warns, result.stderr


def test_entrypoint_says_when_cached_entries_lack_their_key(entrypoint, tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "m-tensorrt-fp16-0123456789abcdef.json").write_text("{}")
    result = entrypoint("run", "--backend", "tensorrt")
    assert "no cache key" in result.stderr and str(tmp_path / "keys") in result.stderr
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "cache.key").write_text("0" * 64)
    assert "no cache key" not in entrypoint("run", "--backend", "tensorrt").stderr
