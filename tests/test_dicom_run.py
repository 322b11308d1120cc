"""DICOM through the real graph: de-identified before any pixel enters, no identifier in any
output byte, results back as DICOM, every access audited, bad files reported and skipped."""
from __future__ import annotations

import pytest

pytest.importorskip("pydicom", reason="DICOM tests need pydicom: pip install -e '.[test]' (the GPU lab lacks it)")

import json

import pydicom

from test_deid import PATIENT_FILE_NAME, find_identifiers, identified_dataset, save, with_rgb_pixels
from test_pipeline import holoburn


def burn_picture(rows=240, columns=320, seed=0):
    """A synthetic burn scene at a size the shipped model knows (at 128x96 it is rightly unsure)."""
    from holoburn.app.synthesis.synth import iter_frames

    frame, _ = next(iter_frames(1, seed, size=(columns, rows)))
    return frame


def test_dicom_run_leaks_no_identifier_and_exports_results(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    for n in range(2):
        save(with_rgb_pixels(identified_dataset(n + 1), burn_picture(seed=n)), source / f"{PATIENT_FILE_NAME}_{n}.dcm")
    (source / "notes.txt").write_text("not a DICOM file")
    (source / "empty.dcm").write_bytes(b"")
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"dicom:{source}", "--out", out, "--save-masks", out / "masks")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    statuses = sorted(l["status"] for l in lines)
    assert statuses.count("ok") == 2 and len(lines) == 4  # two images, two files reported and skipped
    assert all(s.startswith("dicom_") for s in statuses if s != "ok")
    ok = [l for l in lines if l["status"] == "ok"]
    assert all(l["origin"]["dicom_source"].startswith("dicom:2.25.") for l in ok)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dicom_exported_frames"] == 2 and not summary["dicom_export_failures"]
    assert len(summary["sources_skipped"]) == 2

    seg = pydicom.dcmread(sorted((out / "dicom").glob("*_seg.dcm"))[0])
    capture = pydicom.dcmread(sorted((out / "dicom").glob("*_overlay.dcm"))[0])
    assert seg.Modality == "SEG" and capture.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID.startswith("2.25.")

    # no identifying value anywhere: results, summary, audit log, masks, exported DICOM, overlay,
    # file names, and what the command printed
    leaks = {}
    for path in out.rglob("*"):
        if path.is_file():
            found = find_identifiers(path.read_bytes(), extra=(PATIENT_FILE_NAME,)) + find_identifiers(
                path.name, extra=(PATIENT_FILE_NAME,))
            if found:
                leaks[str(path.relative_to(out))] = found
    printed = find_identifiers(result.stdout + result.stderr, extra=(PATIENT_FILE_NAME,))
    assert not leaks and not printed, (leaks, printed)

    audit = holoburn("audit", "verify", out / "audit.jsonl")
    assert audit.returncode == 0 and "chain intact" in audit.stdout
    actions = [json.loads(l)["action"] for l in (out / "audit.jsonl").read_text().splitlines()]
    assert "read" in actions and "export" in actions
    # the chain's head is kept apart from the log (summary and console): truncation is detectable
    head = json.loads((out / "summary.json").read_text())["audit_head"]["dicom:1"]
    assert f"audit head dicom:1" in result.stdout and head in result.stdout
    assert holoburn("audit", "verify", out / "audit.jsonl", "--expect-head", head).returncode == 0
    lines = (out / "audit.jsonl").read_text().splitlines(keepends=True)
    (out / "audit.jsonl").write_text("".join(lines[:-1]))  # the last entry removed
    assert holoburn("audit", "verify", out / "audit.jsonl", "--expect-head", head).returncode != 0


def test_deid_command(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    save(with_rgb_pixels(identified_dataset(1), burn_picture()), source / "a.dcm")
    result = holoburn("deid", source, tmp_path / "clean", "--audit-log", tmp_path / "audit.jsonl")
    assert result.returncode == 0, result.stderr
    written = list((tmp_path / "clean").rglob("*.dcm"))
    assert len(written) == 1 and not find_identifiers(written[0].read_bytes())
    assert pydicom.dcmread(written[0]).PatientIdentityRemoved == "YES"


def test_an_empty_dicom_folder_is_an_error(tmp_path):
    (tmp_path / "study" / "series").mkdir(parents=True)  # folders, no file
    result = holoburn("run", "--source", f"dicom:{tmp_path / 'study'}", "--out", tmp_path / "out")
    assert result.returncode == 2 and "holds no files" in result.stderr and "Traceback" not in result.stderr
