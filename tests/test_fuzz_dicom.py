"""Mutated DICOM files (seeded byte flips, truncations, wrong lengths, huge counts) beside a good
one: every file either comes through or is skipped with its reason; never a traceback, and the
good file is always read. Through the reader, `holoburn run` and `holoburn deid`."""
from __future__ import annotations

import pytest

pytest.importorskip("pydicom", reason="DICOM tests need pydicom: pip install -e '.[test]'")

import io
import struct

import numpy as np

from holoburn.clinical.deid import UidMap
from holoburn.clinical.dicom import DicomSkip, iter_dicom_frames
from test_deid import gradient_rgb, identified_dataset, save, with_rgb_pixels
from test_pipeline import holoburn

MUTANTS = 40


def good_bytes(number: int = 1) -> bytes:
    buffer = io.BytesIO()
    save(with_rgb_pixels(identified_dataset(number), gradient_rgb(32, 48)), buffer)
    return buffer.getvalue()


def mutants(seed: int = 7) -> list[bytes]:
    """Each a copy of a good file, broken one way: flipped bytes anywhere after the preamble,
    cut short, an element's length field replaced, or a frame count no file can hold."""
    rng = np.random.default_rng(seed)
    original = good_bytes()
    out = []
    for k in range(MUTANTS):
        data = bytearray(original)
        kind = k % 4
        if kind == 0:  # byte flips
            for at in rng.integers(132, len(data), int(rng.integers(1, 8))):
                data[at] ^= int(rng.integers(1, 256))
        elif kind == 1:  # truncation
            data = data[: int(rng.integers(0, len(data)))]
        elif kind == 2:  # a 32-bit length field (explicit VR long form or implicit) set to a wrong value
            at = int(rng.integers(132, len(data) - 4))
            data[at : at + 4] = struct.pack("<I", int(rng.choice([0xFFFFFFF0, 0x7FFFFFFF, len(data) * 3, 1])))
        else:  # huge counts in the header text
            for key, value in ((b"\x28\x00\x08\x00", b"2147483648"), (b"\x28\x00\x10\x00", b"\xff\xff")):
                at = data.find(key)
                if at >= 0 and rng.random() < 0.5:
                    data[at + 8 : at + 8 + len(value)] = value
            data[int(rng.integers(132, len(data)))] ^= 0xFF
        out.append(bytes(data))
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzzed") / "Doe_John_MRN123456"
    folder.mkdir()
    for i, data in enumerate(mutants()):
        (folder / f"m{i:03d}.dcm").write_bytes(data)
    (folder / "zz_good.dcm").write_bytes(good_bytes(2))  # sorted last: read after every broken one
    return folder


def test_the_reader_names_each_broken_file_and_reads_the_good_one(tree):
    records = list(iter_dicom_frames(tree, UidMap()))
    skips = [r for r in records if isinstance(r, DicomSkip)]
    frames = [r for r in records if not isinstance(r, DicomSkip)]
    assert not isinstance(records[-1], DicomSkip)  # the good file, read last, came through
    assert len({s.file_ref for s in skips}) == len(skips)  # each skip names its own file
    assert all(s.reason and s.kind for s in skips)
    # every file accounted for: read (one frame or more) or skipped, once
    read_files = {f.file_ref for f in frames}
    assert len(read_files) + len(skips) == MUTANTS + 1


def test_run_and_deid_on_the_fuzzed_tree(tree, tmp_path):
    out = tmp_path / "run"
    result = holoburn("run", "--source", f"dicom:{tree}", "--out", out)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 0, result.stderr[-3000:]
    summary = (out / "summary.json").read_text()
    assert "Doe_John" not in summary and "MRN123456" not in result.stdout + result.stderr
    import json

    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert json.loads(summary)["frames_in"] == len(records)
    assert any(r["status"] == "ok" for r in records)  # the good file's frame was processed
    deid = holoburn("deid", str(tree), str(tmp_path / "deid"), "--audit-log", str(tmp_path / "audit.jsonl"))
    assert "Traceback" not in deid.stderr, deid.stderr[-3000:]
    assert deid.returncode in (0, 1), deid.stderr[-3000:]  # 1: some files were skipped, each named
    assert list((tmp_path / "deid").rglob("*.dcm"))
