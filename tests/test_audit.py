"""The audit log: hash chain, tamper detection with line numbers, crash and concurrency safety."""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os

import pytest

from holoburn.clinical import audit as audit_module
from holoburn.clinical.audit import GENESIS, AuditLog, entry_hash, path_ref, verify


def _log_with(tmp_path, count=5):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for i in range(count):
        log.append("read", {"file": path_ref(tmp_path / f"f{i}.dcm"), "SOPInstanceUID": f"2.25.{i}"}, {"frames": i})
    return path, log


def _lines(path):
    return path.read_bytes().split(b"\n")[:-1]


def _write_lines(path, lines):
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_entries_are_chained_and_verify(tmp_path):
    path, log = _log_with(tmp_path)
    entries = [json.loads(line) for line in _lines(path)]
    assert [e["seq"] for e in entries] == list(range(5))
    assert entries[0]["prev"] == GENESIS
    for before, after in zip(entries, entries[1:]):
        assert after["prev"] == before["hash"]
    for entry in entries:
        assert entry["hash"] == entry_hash(entry)
        assert list(entry) == list(audit_module.ENTRY_KEYS)
        assert entry["time"].endswith("Z")
        assert entry["actor"] == log.actor and entry["actor"]  # the operator, not a patient
    assert verify(path) == (True, [])
    assert log.head() == (5, entries[-1]["hash"])


def test_edited_entry_is_named_by_line(tmp_path):
    path, _ = _log_with(tmp_path)
    lines = _lines(path)
    lines[2] = lines[2].replace(b'"frames":2', b'"frames":7')
    _write_lines(path, lines)
    ok, problems = verify(path)
    assert not ok
    assert any(p.startswith("line 3:") and "edited" in p for p in problems), problems


def test_edit_with_recomputed_hash_breaks_the_next_link(tmp_path):
    path, _ = _log_with(tmp_path)
    lines = _lines(path)
    entry = json.loads(lines[1])
    entry["details"] = {"frames": 99}
    entry["hash"] = entry_hash(entry)  # a forger who recomputes this entry's own hash
    lines[1] = json.dumps(entry, separators=(",", ":")).encode()
    _write_lines(path, lines)
    ok, problems = verify(path)
    assert not ok
    assert any(p.startswith("line 3:") and "prev" in p for p in problems), problems


def test_removed_entry_is_detected(tmp_path):
    path, _ = _log_with(tmp_path)
    lines = _lines(path)
    del lines[2]
    _write_lines(path, lines)
    ok, problems = verify(path)
    assert not ok
    assert any(p.startswith("line 3:") and "removed" in p for p in problems), problems


def test_reordered_entries_are_detected(tmp_path):
    path, _ = _log_with(tmp_path)
    lines = _lines(path)
    lines[1], lines[3] = lines[3], lines[1]
    _write_lines(path, lines)
    ok, problems = verify(path)
    assert not ok
    assert any(p.startswith("line 2:") for p in problems), problems


def test_inserted_entry_is_detected(tmp_path):
    path, _ = _log_with(tmp_path)
    lines = _lines(path)
    forged = json.loads(lines[1])
    forged["details"] = {"frames": 1234}
    forged["hash"] = entry_hash(forged)
    lines.insert(2, json.dumps(forged, separators=(",", ":")).encode())
    _write_lines(path, lines)
    ok, problems = verify(path)
    assert not ok
    assert any(p.startswith("line 3:") for p in problems), problems


def test_truncated_last_line_is_detected_and_appending_recovers(tmp_path):
    path, log = _log_with(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-40])  # a crash in the middle of the last write
    ok, problems = verify(path)
    assert not ok
    assert problems == [problems[0]] and problems[0].startswith("line 5: truncated last line")

    log.append("read", {"file": "path-sha256:0"}, {})  # the next run goes on logging
    ok, problems = verify(path)
    assert not ok
    assert len(problems) == 1 and problems[0].startswith("line 5: not a JSON entry"), problems
    last = json.loads(_lines(path)[-1])
    assert last["seq"] == 4 and last["prev"] == json.loads(_lines(path)[3])["hash"]


def test_removal_of_the_last_entries_needs_the_recorded_head(tmp_path):
    path, log = _log_with(tmp_path)
    head = log.head()
    _write_lines(path, _lines(path)[:-2])
    assert verify(path)[0]  # the chain alone cannot tell (documented)
    ok, problems = verify(path, expect_head=head)
    assert not ok and "removed from or added at the end" in problems[-1]


def test_every_append_is_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(audit_module.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    log = AuditLog(tmp_path / "sub" / "audit.jsonl")
    log.append("read", {"file": "a"})
    log.append("export", {"file": "b"})
    assert len(synced) >= 2
    # created readable and writable by its owner only
    assert oct((tmp_path / "sub" / "audit.jsonl").stat().st_mode & 0o777) == "0o600"


def _append_many(path, worker, count):
    log = AuditLog(path, actor=f"worker{worker}")
    for i in range(count):
        log.append("read", {"file": f"w{worker}-{i}"}, {"pad": "x" * 2000})


def test_two_processes_do_not_interleave(tmp_path):
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(path, w, 40)) for w in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    assert verify(path) == (True, [])
    entries = [json.loads(line) for line in _lines(path)]
    assert len(entries) == 80
    assert {e["actor"] for e in entries} == {"worker0", "worker1"}


def test_verify_command(tmp_path, capsys):
    path, log = _log_with(tmp_path)
    count, last = log.head()
    parser = argparse.ArgumentParser()
    audit_module.add_verify_arguments(parser)
    assert audit_module.run_verify(parser.parse_args([str(path), "--expect-head", f"{count}:{last}"])) == 0
    assert "chain intact" in capsys.readouterr().out
    _write_lines(path, _lines(path)[1:])
    assert audit_module.run_verify(parser.parse_args([str(path)])) == 1
    assert "line 1:" in capsys.readouterr().out


def test_path_ref_hides_the_path():
    ref = path_ref("/data/Qwertzuiop_Janeska/burn.dcm")
    assert ref.startswith("path-sha256:") and "Qwertzuiop" not in ref and len(ref) == 28
    assert ref == path_ref("/data/Qwertzuiop_Janeska/burn.dcm")


def test_empty_and_missing_logs(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert verify(empty) == (True, [])
    ok, problems = verify(tmp_path / "missing.jsonl")
    assert not ok and "cannot read" in problems[0]
    assert AuditLog(tmp_path / "missing.jsonl").head() == (0, GENESIS)
    with pytest.raises(ValueError):
        AuditLog(empty).append("", {})
