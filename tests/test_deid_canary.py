"""De-identification by allow-list, proven with canaries: a DICOM file in which every text
attribute pydicom's dictionary knows (VR LO, SH, PN, ST, LT, UT, UC) holds "CANARY<tag>", with
canaries in sequences (known, nested, unknown, IconImageSequence), in a private block, in an
unknown public tag (0010,9999), in overlay attributes, in the file meta, and in its folder and file
name. Through `holoburn deid` and through `holoburn run --source dicom:` (which exports DICOM
SEG and SC): no canary, no original UID and no part of the path may occur in any byte of any
output file, audit entry, stdout or stderr. Bad files beside good ones are each reported by
their path hash and skipped; the rest goes on.

Left out of the canary data set: the 8 text attributes of the command group (0000,eeee):
pydicom refuses to write a command set into a Part 10 file. Retired attributes are all in.
"""
from __future__ import annotations

import pytest

pytest.importorskip("pydicom", reason="DICOM tests need pydicom: pip install -e '.[test]' (the GPU lab lacks it)")

import json
import logging
import warnings

import numpy as np
import pydicom
from pydicom.datadict import DicomDictionary
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from holoburn.clinical.audit import path_ref, verify
from holoburn.clinical.deid import UidMap, deidentify
from test_deid import dataset_bytes, gradient_rgb, save
from test_pipeline import holoburn

TEXT_VRS = ("LO", "SH", "PN", "ST", "LT", "UT", "UC")
ORIGINAL_ROOT = "1.3.6.1.4.1.999999.13."
PATIENT_FOLDER = "Doe_John_MRN123456"
#: what must never reach an output (compared case-insensitively)
SECRETS = ("CANARY", PATIENT_FOLDER, "Doe_John", "MRN123456", ORIGINAL_ROOT)


def leaks(blob: bytes | str) -> list[str]:
    """The secrets found in `blob`."""
    text = (blob.decode("latin-1") if isinstance(blob, bytes) else blob).lower()
    return [secret for secret in SECRETS if secret.lower() in text]


def _canary(tag: int, where: str = "") -> str:
    return f"CANARY{tag:08X}{where}"


def _raw(tag: int, vr: str, value: bytes) -> RawDataElement:
    """An element as read from a file (pydicom refuses to make an IS or DS of text)."""
    return RawDataElement(Tag(tag), vr, len(value), value, 0, False, True, True, False)


def _text_item(where: str) -> Dataset:
    item = Dataset()
    item.PatientName = f"CANARY^{where}"
    item.add(DataElement(0x00109999, "LO", f"CANARY-unknown-{where}"))
    return item


def canary_dataset(number: int, rgb: np.ndarray, *, functional_groups: bool = False) -> Dataset:
    """An RGB Secondary Capture (Modality XC) with a canary in every place a value can hide."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    with warnings.catch_warnings():  # pydicom warns about values longer than their VR allows
        warnings.simplefilter("ignore")
        for tag, (vr, _vm, _name, _retired, _keyword) in DicomDictionary.items():
            if vr in TEXT_VRS and tag >> 16 != 0x0000:  # no command set in a file
                (ds.file_meta if tag >> 16 == 0x0002 else ds)[tag] = DataElement(tag, vr, _canary(tag))
        for tag in (0x60000022, 0x60001500):  # Overlay Description and Label (a repeating group)
            ds[tag] = DataElement(tag, "LO", _canary(tag))
        ds[0x00200013] = _raw(0x00200013, "IS", b"CANARY-IS ")  # Instance Number and Frame Time, kept
        ds[0x00181063] = _raw(0x00181063, "DS", b"CANARY-DS\\40 ")  # numbers: text instead
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = f"{ORIGINAL_ROOT}3.{number}"
    ds.file_meta.SourceApplicationEntityTitle = "CANARY_AE"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = f"{ORIGINAL_ROOT}3.{number}"
    ds.StudyInstanceUID = f"{ORIGINAL_ROOT}1"
    ds.SeriesInstanceUID = f"{ORIGINAL_ROOT}2"
    ds.Modality, ds.ConversionType, ds.Laterality, ds.BodyPartExamined = "XC", "DI", "L", "ARM"
    ds.PatientBirthDate, ds.StudyDate, ds.StudyTime = "19610412", "20260101", "101112"
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = np.ascontiguousarray(rgb, np.uint8).tobytes()

    icon = Dataset()  # an icon is a picture of the image, with its own text
    icon.Rows = icon.Columns = 4
    icon.SamplesPerPixel, icon.PhotometricInterpretation = 1, "MONOCHROME2"
    icon.BitsAllocated = icon.BitsStored = 8
    icon.HighBit, icon.PixelRepresentation = 7, 0
    icon.PixelData = b"CANARY-icon-pix!"
    icon.ImageComments = "CANARY-icon"
    ds.IconImageSequence = Sequence([icon])
    study = Dataset()  # a known sequence, with a sequence nested in its item
    study.ReferencedSOPClassUID = SecondaryCaptureImageStorage
    study.ReferencedSOPInstanceUID = f"{ORIGINAL_ROOT}9"
    study.ReferencedImageSequence = Sequence([_text_item("nested")])
    ds.ReferencedStudySequence = Sequence([study])
    ds.add(DataElement(0x00109998, "SQ", Sequence([_text_item("unknown-sequence")])))  # unknown public SQ
    ds.add(DataElement(0x00109999, "LO", "CANARY00109999"))  # unknown public tag
    window = Dataset()  # a sequence the allow-list keeps: only its listed items survive
    window.LUTDescriptor = [4, 0, 8]
    window.add_new(0x00283006, "US", [0, 85, 170, 255])  # LUT Data
    window.LUTExplanation = "CANARY-lut"
    ds.VOILUTSequence = Sequence([window])
    if functional_groups:
        frame_voi = Dataset()
        frame_voi.WindowCenter, frame_voi.WindowWidth = 128, 256
        frame_voi.WindowCenterWidthExplanation = "CANARY-window"
        content = Dataset()
        content.StackID = "CANARY-stack"
        group = Dataset()
        group.FrameVOILUTSequence = Sequence([frame_voi])
        group.FrameContentSequence = Sequence([content])
        ds.SharedFunctionalGroupsSequence = Sequence([group])

    block = ds.private_block(0x0011, "EVIL", create=True)
    block.add_new(0x01, "LO", "CANARY-private")
    block.add_new(0x02, "SQ", Sequence([_text_item("private")]))
    ds.private_block(0x0013, "CANARY-creator", create=True).add_new(0x01, "LO", "CANARY-private-2")
    return ds


def write_canary_file(folder, number: int, rgb: np.ndarray):
    """Doe_John_MRN123456/CANARY_<number>.dcm under `folder`."""
    path = folder / PATIENT_FOLDER / f"CANARY_file_{number}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    save(canary_dataset(number, rgb), path)
    return path


def test_the_canary_file_holds_a_canary_in_every_text_attribute(tmp_path):
    """The test would prove nothing if the canaries were not there to be found."""
    path = write_canary_file(tmp_path, 1, gradient_rgb(64, 64))
    data = path.read_bytes()
    dictionary_text = sum(1 for tag, entry in DicomDictionary.items() if entry[0] in TEXT_VRS and tag >> 16)
    assert dictionary_text > 700
    assert data.count(b"CANARY") >= dictionary_text + 10
    read = pydicom.dcmread(path)
    assert read.PatientName == _canary(0x00100010) and read.ClinicalTrialSiteName == _canary(0x00120031)
    assert read[0x00109999].value == "CANARY00109999" and read.IconImageSequence[0].ImageComments == "CANARY-icon"


@pytest.mark.parametrize("functional_groups", [False, True])
def test_deidentify_keeps_no_canary(functional_groups):
    source = canary_dataset(1, gradient_rgb(64, 64), functional_groups=functional_groups)
    uid_map = UidMap()
    out = deidentify(source, uid_map)
    for blob in (dataset_bytes(out), str(out), repr(out)):
        assert leaks(blob) == []
    for gone in ("IconImageSequence", "ReferencedStudySequence", "ClinicalTrialSponsorName", "ClinicalTrialSiteName",
                 "ClinicalTrialProtocolName", "ProtocolName", "IssuerOfAdmissionID", "RequestedProcedureLocation",
                 "DeviceDescription", "StorageMediaFileSetID", "RouteOfAdmissions", "HumanPerformerOrganization",
                 "ScheduledPatientInstitutionResidence", "TopicTitle", "TopicAuthor", "PatientBirthName"):
        assert gone not in out, gone
    assert 0x00109999 not in out and 0x00109998 not in out and 0x60000022 not in out
    assert "InstanceNumber" not in out and "FrameTime" not in out  # text where a number belongs
    assert not any(element.tag.is_private for element in out.iterall())
    # what the pipeline needs is there; the patient is an opaque pseudonym; dates are empty
    assert (out.Rows, out.Columns, out.SamplesPerPixel, out.PhotometricInterpretation) == (64, 64, 3, "RGB")
    assert (out.Modality, out.Laterality, out.BodyPartExamined, out.ConversionType) == ("XC", "L", "ARM", "DI")
    assert out.PixelData == source.PixelData
    assert out.PatientID == uid_map.pseudonym(_canary(0x00100020)) and out.PatientBirthDate == "" and out.StudyDate == ""
    assert out.StudyInstanceUID == uid_map(f"{ORIGINAL_ROOT}1") and out.SOPInstanceUID.startswith("2.25.")
    assert out.VOILUTSequence[0].LUTData == [0, 85, 170, 255] and "LUTExplanation" not in out.VOILUTSequence[0]
    if functional_groups:
        group = out.SharedFunctionalGroupsSequence[0]
        assert group.FrameVOILUTSequence[0].WindowCenter == 128 and "FrameContentSequence" not in group
    assert [item.CodeValue for item in out.DeidentificationMethodCodeSequence] == ["113100"]
    assert "Manufacturer" in out and out.Manufacturer == ""  # Type 2, emptied unless retained
    kept = deidentify(source, UidMap(), retain_device_identity=True)
    assert kept.Manufacturer == _canary(0x00080070) and kept.ManufacturerModelName == _canary(0x00081090)


def _all_bytes(folder) -> dict[str, list[str]]:
    """path relative to `folder` -> secrets found in the file's bytes or its name."""
    found = {}
    for path in folder.rglob("*"):
        hits = leaks(str(path.relative_to(folder))) + (leaks(path.read_bytes()) if path.is_file() else [])
        if hits:
            found[str(path.relative_to(folder))] = hits
    return found


def _flip(path, at_tag: bytes, offset: int, value: int | None = None) -> None:
    """Damage one byte, `offset` bytes after the element header `at_tag`: XOR 0xFF, or set it."""
    data = bytearray(path.read_bytes())
    assert data.count(at_tag) == 1
    at = data.index(at_tag) + offset
    data[at] = data[at] ^ 0xFF if value is None else value
    path.write_bytes(bytes(data))


def _bad_files(folder) -> dict[str, str]:
    """Beside the good files: one damaged value (harmless now: it is never read), one damaged
    length, an unknown transfer syntax and a missing SOP Instance UID. path_ref -> expected kind."""
    folder.mkdir(parents=True, exist_ok=True)
    small = gradient_rgb(64, 64)  # small: the damaged length below must run past the end
    recipients = b"\x40\x00\x10\x10PN"  # (0040,1010) Names of Intended Recipients of Results

    value = write_canary_file(folder, 11, small)
    _flip(value, recipients, 8 + 13)  # tag, VR, 2-byte length, then the 14th character of "CANARY00401010"

    length = folder / "flipped_length.dcm"
    save(canary_dataset(12, small), length)
    _flip(length, recipients, 7, 0xFF)  # the length's high byte: the value runs past the end of the file

    syntax = folder / "bogus_syntax.dcm"
    save(canary_dataset(13, small), syntax)
    data = syntax.read_bytes()
    assert data.count(b"1.2.840.10008.1.2.1\0") == 1
    syntax.write_bytes(data.replace(b"1.2.840.10008.1.2.1\0", b"1.2.3.4.5.6.7.8.9.10"))

    no_uid = folder / "no_sop_instance_uid.dcm"
    ds = canary_dataset(14, small)
    del ds.SOPInstanceUID
    save(ds, no_uid)
    return {
        path_ref(value): "ok",
        path_ref(length): "truncated",
        path_ref(syntax): "unknown_transfer_syntax",
        path_ref(no_uid): "no_sop_instance_uid",
    }


def test_holoburn_deid_leaks_no_canary_and_skips_each_bad_file(tmp_path):
    rgb = gradient_rgb(64, 64)
    inputs = tmp_path / "in"
    write_canary_file(inputs, 1, rgb)
    write_canary_file(inputs, 2, rgb[::-1].copy())
    expected = _bad_files(inputs / "more")
    out, audit = tmp_path / "out", tmp_path / "audit.jsonl"

    result = holoburn("deid", inputs, out, "--audit-log", audit)
    # partial success: the good files are written, and the exit status says some were skipped
    assert result.returncode == 1, result.stderr
    assert "6 files: 3 de-identified, 3 skipped" in result.stdout
    for ref, kind in expected.items():
        line = next(line for line in result.stderr.splitlines() if ref in line)
        assert (kind == "ok" and "de-identified ->" in line) or f"skipped ({kind}):" in line, line
    assert "Failed to decode" not in result.stderr  # the damaged name was never even read

    assert _all_bytes(out) == {} and leaks(audit.read_bytes()) == []
    assert leaks(result.stdout) == [] and leaks(result.stderr) == []
    assert verify(audit) == (True, [])
    written = sorted(out.rglob("*.dcm"))
    assert len(written) == 3
    for path in written:  # valid DICOM that reads back, pixels untouched
        back = pydicom.dcmread(path)
        assert back.PatientIdentityRemoved == "YES" and back.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert back.pixel_array.shape == (64, 64, 3) and back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
        assert "NamesOfIntendedRecipientsOfResults" not in back
    pixels = sorted(pydicom.dcmread(p).pixel_array.tobytes() for p in written)
    assert rgb.tobytes() in pixels and rgb[::-1].tobytes() in pixels


def test_holoburn_run_with_dicom_export_leaks_no_canary(tmp_path):
    """The real graph: read, de-identify, segment, export SEG and SC; bad files skipped, run goes on."""
    from test_dicom_run import burn_picture

    inputs = tmp_path / "in"
    write_canary_file(inputs, 1, burn_picture(seed=0))
    expected = _bad_files(inputs / "more")
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"dicom:{inputs}", "--out", out, "--save-masks", out / "masks")
    assert result.returncode == 0, result.stderr  # as for any source: skipped files are counted, not fatal

    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    statuses = sorted(line["status"] for line in lines)
    assert statuses == sorted(["ok", "ok", "dicom_truncated", "dicom_unknown_transfer_syntax",
                               "dicom_no_sop_instance_uid"]), statuses
    for ref, kind in expected.items():
        if kind != "ok":
            assert f"({ref}) skipped: {kind}:" in result.stderr, (ref, kind)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dicom_exported_frames"] >= 1 and not summary["dicom_export_failures"], summary
    segs, captures = sorted((out / "dicom").glob("*_seg.dcm")), sorted((out / "dicom").glob("*_overlay.dcm"))
    assert segs and captures
    import highdicom as hd

    for path in segs + captures:  # valid DICOM, read back by pydicom and highdicom
        back = pydicom.dcmread(path)
        assert back.PatientIdentityRemoved == "YES" and back.PatientID.startswith("ANON-")
        assert back.StudyInstanceUID.startswith("2.25.") and back.pixel_array.size
    assert hd.seg.segread(segs[0]).number_of_segments == 5

    assert _all_bytes(out) == {}, _all_bytes(out)
    assert leaks(result.stdout) == [] and leaks(result.stderr) == []
    assert holoburn("audit", "verify", out / "audit.jsonl").returncode == 0


def test_the_log_forwarder_never_prints_record_arguments(capsys):
    """A pydicom record that cannot be formatted: logging's own handleError would print its raw
    arguments (values from a file) to stderr."""
    assert logging.raiseExceptions
    logging.getLogger("pydicom.filereader").warning("value %s and %s", "CANARY^Doe^John")  # one argument short
    logging.getLogger("pydicom").warning("value %d", "MRN123456")  # the wrong type
    captured = capsys.readouterr()
    assert leaks(captured.err + captured.out) == []
    assert captured.err.count("could not be formatted and was dropped") == 2
    assert "pydicom.filereader" in captured.err
