"""De-identification (allow-list, PS3.15 Annex E basic profile) and the `holoburn deid` command.

`identified_dataset()`, `IDENTIFIERS` and `find_identifiers()` are shared with
test_dicom_io.py and test_dicom_export.py: a data set full of identifying values, and a search
of any output for them.
"""
from __future__ import annotations

import pytest

pytest.importorskip("pydicom", reason="DICOM tests need pydicom: pip install -e '.[test]' (the GPU lab lacks it)")

import argparse
import io
import json
import logging

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from holoburn.clinical import deid
from holoburn.clinical.audit import AuditLog, verify
from holoburn.clinical.errors import BadInput
from holoburn.clinical.deid import (
    ALLOW_LIST,
    EMPTY,
    NEW_UID,
    PSEUDONYM,
    BurnedInAnnotationError,
    UidMap,
    deidentify,
    deidentify_file,
    deidentify_tree,
)

ORIGINAL_UID_ROOT = "1.3.6.1.4.1.999999.7."
STUDY_UID = ORIGINAL_UID_ROOT + "101.1"
SERIES_UID = ORIGINAL_UID_ROOT + "101.2"
FRAME_OF_REFERENCE_UID = ORIGINAL_UID_ROOT + "101.4"
REFERENCED_UID = ORIGINAL_UID_ROOT + "101.5"
PATIENT_FILE_NAME = "Qwertzuiop_Janeska_MRN48151623"  # file names hold patient names too

#: attribute -> identifying value put into every test file
IDENTIFIERS: dict[str, str] = {
    "PatientName": "Qwertzuiop^Janeska^Marie",
    "PatientID": "MRN48151623",
    "PatientBirthDate": "19610412",
    "PatientBirthTime": "031415.271828",
    "PatientAddress": "12 Elmwood Street, Springfield",
    "PatientTelephoneNumbers": "555-0199-7731",
    "PatientMotherBirthName": "Brumbleton^Odette",
    "OtherPatientNames": "Janeska^Q",
    "MedicalRecordLocator": "MRL-55501",
    "InstitutionName": "Saint Elsewhere Burn Centre",
    "InstitutionAddress": "1 Hospital Way, Springfield",
    "InstitutionalDepartmentName": "Burns Unit Westwing",
    "ReferringPhysicianName": "Housemann^Gregor",
    "PerformingPhysicianName": "Quinnick^Michaela",
    "OperatorsName": "Ratchedon^Mildred",
    "PhysiciansOfRecord": "Kildaire^James",
    "RequestingPhysician": "Orderton^Felix",
    "NamesOfIntendedRecipientsOfResults": "Recipientson^Ada",  # PN outside the table
    "StationName": "BURNCAM07X",
    "DeviceSerialNumber": "SN-CAM-31337",
    "AccessionNumber": "ACC99887766",
    "StudyID": "STUDY4242X",
    "StudyDate": "19990315",
    "StudyTime": "101112.654321",
    "SeriesDate": "19990316",
    "AcquisitionDate": "19990317",
    "ContentDate": "19990318",
    "DateOfSecondaryCapture": "19990319",  # a date outside the table
    "StudyDescription": "Burns of Qwertzuiop left forearm",
    "SeriesDescription": "Janeska follow-up series",
    "ImageComments": "photographed by nurse Brightwaterly",
    "CommentsOnThePerformedProcedureStep": "free text naming Brightwaterly",  # ST outside the table
    "ProtocolName": "QWERTZ burn protocol",
    "PatientAge": "063Y",
}
#: values placed elsewhere (sequences, private tags, UIDs, file names)
OTHER_IDENTIFIERS = (
    "ALTMRN777123",
    "RPID-5551212",
    "SPSID-77123",
    "Hiddenperson",
    "ACME HOSPITAL PRIVATE",
    "PRIV-Qwertzuiop",
    ORIGINAL_UID_ROOT,
    PATIENT_FILE_NAME,
)


def identifier_tokens(extra: tuple[str, ...] = ()) -> list[str]:
    """Distinctive substrings of every identifying value (person names split at '^')."""
    tokens: set[str] = set(OTHER_IDENTIFIERS) | set(extra)
    for keyword, value in IDENTIFIERS.items():
        if keyword == "PatientAge":
            continue  # "063Y" is too short to search blindly; checked by attribute
        parts = value.split("^") if "^" in value else [value]
        tokens.update(p for p in parts if len(p) >= 4)
    return sorted(tokens)


def find_identifiers(blob: bytes | str, extra: tuple[str, ...] = ()) -> list[str]:
    """The identifying tokens found in `blob` (case-insensitive; str or UTF-8 bytes)."""
    haystack = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    haystack = haystack.lower()
    return [token for token in identifier_tokens(extra) if token.lower() in haystack]


def identified_dataset(sop_number: int = 1, *, sop_class: str = SecondaryCaptureImageStorage) -> Dataset:
    """A header full of identifying values, private tags and nested sequences; no pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = f"{ORIGINAL_UID_ROOT}101.3.{sop_number}"
    ds.file_meta.SourceApplicationEntityTitle = "BURNCAM07X"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = f"{ORIGINAL_UID_ROOT}101.3.{sop_number}"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.FrameOfReferenceUID = FRAME_OF_REFERENCE_UID
    ds.Modality = "XC"
    ds.Manufacturer = "AcmeCam"
    ds.SeriesNumber = 1
    ds.InstanceNumber = sop_number
    for keyword, value in IDENTIFIERS.items():
        setattr(ds, keyword, value)

    other_id = Dataset()
    other_id.PatientID = "ALTMRN777123"
    other_id.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other_id])

    referenced = Dataset()
    referenced.ReferencedSOPClassUID = sop_class
    referenced.ReferencedSOPInstanceUID = REFERENCED_UID
    ds.ReferencedImageSequence = Sequence([referenced])

    request = Dataset()
    request.RequestedProcedureID = "RPID-5551212"
    request.ScheduledProcedureStepID = "SPSID-77123"
    ds.RequestAttributesSequence = Sequence([request])

    equipment = Dataset()  # nested institution and physician names inside a kept sequence
    equipment.Manufacturer = "AcmeCam"
    equipment.InstitutionName = IDENTIFIERS["InstitutionName"]
    equipment.OperatorsName = IDENTIFIERS["OperatorsName"]
    equipment.ContributionDateTime = "19990315101112"
    ds.ContributingEquipmentSequence = Sequence([equipment])

    block = ds.private_block(0x0011, "ACME HOSPITAL PRIVATE", create=True)
    block.add_new(0x01, "LO", "PRIV-Qwertzuiop-48151623")
    hidden = Dataset()
    hidden.PatientName = "Hiddenperson^Zed"
    block.add_new(0x02, "SQ", Sequence([hidden]))
    return ds


def with_rgb_pixels(ds: Dataset, rgb: np.ndarray) -> Dataset:
    """Attach (H, W, 3) uint8 RGB pixels, uncompressed."""
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(rgb, np.uint8).tobytes()
    return ds


def gradient_rgb(rows: int = 32, columns: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:rows, 0:columns]
    return np.stack([x * 5, y * 7, (x + y) * 3], axis=-1).astype(np.uint8)


def save(ds: Dataset, path) -> None:
    ds.save_as(path, enforce_file_format=True)


def dataset_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# -- the allow-list ---------------------------------------------------------------------------


def test_allow_list_keeps_no_text_and_replaces_every_identity():
    """No attribute of a free-text or name VR is kept as it came; instance UIDs are new ones."""
    from pydicom.datadict import dictionary_VR

    def rows(table, depth=0):
        for keyword, action in table.items():
            yield keyword, action, depth
            if isinstance(action, dict):
                yield from rows(action, depth + 1)

    for keyword, action, depth in rows(ALLOW_LIST):
        vr = dictionary_VR(keyword)
        if vr in ("LO", "SH", "PN", "ST", "LT", "UT", "UC", "DA", "DT", "TM", "AS"):
            assert action in (EMPTY, PSEUDONYM) and depth == 0, keyword  # never KEEP
        assert (action == NEW_UID) == (vr == "UI" and keyword != "SOPClassUID"), keyword
    assert ALLOW_LIST["PatientID"] == ALLOW_LIST["PatientName"] == PSEUDONYM
    for removed in ("IconImageSequence", "ReferencedStudySequence", "ClinicalTrialSiteName", "ProtocolName",
                    "OtherPatientIDsSequence", "InstitutionName", "ManufacturerModelName", "DeviceSerialNumber"):
        assert removed not in ALLOW_LIST, removed


# -- deidentify() ----------------------------------------------------------------------------


def test_deidentify_removes_every_identifier_and_never_mutates_the_input():
    source = with_rgb_pixels(identified_dataset(), gradient_rgb())
    source.add_new(0x00411001, "UN", b"UNKNOWN-PUBLIC Qwertzuiop")  # a public tag of unknown VR
    before = dataset_bytes(source)
    out = deidentify(source, UidMap())
    assert dataset_bytes(source) == before  # input untouched
    assert find_identifiers(str(out)) == []
    assert find_identifiers(dataset_bytes(out)) == []
    assert find_identifiers(repr(out)) == []
    # the patient is an opaque pseudonym; Type 2 attributes stay, empty; the rest is gone
    assert out.PatientID.startswith("ANON-") and out.PatientName == f"{out.PatientID}^"
    assert out.StudyDate == "" and out.AccessionNumber == "" and out.Manufacturer == ""
    assert "PatientAge" not in out and "InstitutionName" not in out and "OperatorsName" not in out
    assert "PatientBirthTime" not in out and "DateOfSecondaryCapture" not in out
    assert "CommentsOnThePerformedProcedureStep" not in out and "NamesOfIntendedRecipientsOfResults" not in out
    for sequence in ("ContributingEquipmentSequence", "OtherPatientIDsSequence", "ReferencedImageSequence",
                     "RequestAttributesSequence"):
        assert sequence not in out, sequence
    assert not any(element.tag.is_private for element in out.iterall())
    assert 0x00411001 not in out
    assert "SourceApplicationEntityTitle" not in out.file_meta
    # markers of what was done
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert out.DeidentificationMethodCodeSequence[0].CodingSchemeDesignator == "DCM"
    assert "Annex E" in out.DeidentificationMethod[0]
    # pixels and non-identifying image attributes kept
    assert out.PixelData == source.PixelData and out.Rows == 32 and out.Modality == "XC"
    assert out.SeriesNumber == 1 and out.SOPClassUID == source.SOPClassUID
    assert not hasattr(out, "filename")


def test_uids_are_remapped_consistently_within_a_run():
    uid_map = UidMap()
    first = deidentify(identified_dataset(1), uid_map)
    second = deidentify(identified_dataset(2), uid_map)
    for out in (first, second):
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            value = UID(out[keyword].value)
            assert value.startswith("2.25.") and value.is_valid and len(value) <= 64, (keyword, value)
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
        assert out.SOPClassUID == SecondaryCaptureImageStorage  # classes are not instances
    assert first.StudyInstanceUID == second.StudyInstanceUID == uid_map(STUDY_UID)
    assert first.SeriesInstanceUID == second.SeriesInstanceUID
    assert first.FrameOfReferenceUID == second.FrameOfReferenceUID == uid_map(FRAME_OF_REFERENCE_UID)
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert first.PatientID == second.PatientID  # one patient, one pseudonym within the run
    # another run (salt) gives other UIDs and pseudonyms; the same salt the same ones
    other_run = deidentify(identified_dataset(1), UidMap())
    assert other_run.SOPInstanceUID != first.SOPInstanceUID and other_run.PatientID != first.PatientID
    salt = b"s" * 32
    assert UidMap(salt)(STUDY_UID) == UidMap(salt)(STUDY_UID)
    assert "salt" not in repr(UidMap(salt)).replace("<secret salt>", "") and "sss" not in repr(UidMap(salt))


def test_retain_patient_characteristics_option():
    source = identified_dataset()
    source.PatientAge = "094Y"
    out = deidentify(source, UidMap(), retain_patient_characteristics=True)
    assert out.PatientAge == "090Y"  # ages over 89 are capped
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113108"]
    assert find_identifiers(dataset_bytes(out)) == []


def test_burned_in_annotation_is_refused_and_the_override_audited(tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl")
    source = with_rgb_pixels(identified_dataset(), gradient_rgb())
    source.BurnedInAnnotation = "YES"
    with pytest.raises(BurnedInAnnotationError) as refused:
        deidentify(source, UidMap(), audit=audit, source_ref="path-sha256:0")
    assert refused.value.kind == "burned_in" and "--allow-burned-in" in str(refused.value)
    with pytest.raises(ValueError, match="audit"):
        deidentify(source, UidMap(), allow_burned_in=True)  # an override off the record
    out = deidentify(source, UidMap(), allow_burned_in=True, audit=audit, source_ref="path-sha256:0")
    assert out.BurnedInAnnotation == "YES"  # the flag travels on
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e["action"] for e in entries] == ["refuse_burned_in", "override_burned_in"]
    assert entries[1]["object"]["SOPInstanceUID"] == out.SOPInstanceUID
    assert verify(tmp_path / "audit.jsonl") == (True, [])
    assert find_identifiers((tmp_path / "audit.jsonl").read_bytes()) == []


def test_pydicom_warnings_do_not_print_identifiers(tmp_path, caplog, recwarn):
    source = with_rgb_pixels(identified_dataset(), gradient_rgb())
    source.PatientBirthDate = "1961-04-12 Qwertzuiop"  # an invalid DA: pydicom warns, quoting it
    path = tmp_path / "bad_date.dcm"
    save(source, path)
    caplog.set_level(logging.DEBUG)
    raw = pydicom.dcmread(path)
    _ = str(raw.PatientBirthDate)  # the value is validated when first used
    deidentify(raw, UidMap())
    logged = "\n".join(record.getMessage() for record in caplog.records)
    warned = "\n".join(str(w.message) for w in recwarn)
    assert "Qwertzuiop" not in logged and "1961-04-12" not in logged
    assert "Qwertzuiop" not in warned and "1961-04-12" not in warned


# -- files and the command ---------------------------------------------------------------------


def test_deidentify_file_writes_and_audits(tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl")
    source_path = tmp_path / f"{PATIENT_FILE_NAME}.dcm"
    save(with_rgb_pixels(identified_dataset(), gradient_rgb()), source_path)
    written = deidentify_file(source_path, tmp_path / "out.dcm", UidMap(), audit=audit)
    data = written.read_bytes()
    assert find_identifiers(data) == []
    assert pydicom.dcmread(written).PatientIdentityRemoved == "YES"
    entry = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
    assert entry["action"] == "deidentify" and entry["object"]["file"].startswith("path-sha256:")
    assert find_identifiers((tmp_path / "audit.jsonl").read_bytes()) == []


def test_deid_command_over_a_tree(tmp_path, capsys):
    tree = tmp_path / "in" / PATIENT_FILE_NAME
    tree.mkdir(parents=True)
    for number in (1, 2):
        save(with_rgb_pixels(identified_dataset(number), gradient_rgb()), tree / f"{PATIENT_FILE_NAME}_{number}.dcm")
    burned = with_rgb_pixels(identified_dataset(3), gradient_rgb())
    burned.BurnedInAnnotation = "YES"
    save(burned, tree / "burned.dcm")
    save(with_rgb_pixels(identified_dataset(1), gradient_rgb()), tree / "copy_of_1.dcm")  # same SOP
    (tree / "notes.txt").write_text("Qwertzuiop Janeska was seen today\n")
    (tree / "empty.dcm").write_bytes(b"")
    no_pixels = identified_dataset(4)
    save(no_pixels, tree / "header_only.dcm")

    parser = argparse.ArgumentParser()
    deid.add_deid_arguments(parser)
    args = parser.parse_args(
        [str(tmp_path / "in"), str(tmp_path / "out"), "--audit-log", str(tmp_path / "audit.jsonl")]
    )
    status = deid.run_deid(args)
    captured = capsys.readouterr()
    assert status == 1  # some files were skipped
    assert "7 files: 2 de-identified, 5 skipped" in captured.out
    for kind in ("burned_in", "duplicate", "not_dicom", "empty", "no_pixel_data"):
        assert f"x {kind}" in captured.out, kind
    assert find_identifiers(captured.out + captured.err) == []

    outputs = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert len(outputs) == 2
    for output in outputs:
        assert find_identifiers(str(output.relative_to(tmp_path))) == []  # names from new UIDs
        assert find_identifiers(output.read_bytes()) == []
    audit_bytes = (tmp_path / "audit.jsonl").read_bytes()
    assert find_identifiers(audit_bytes) == []
    assert verify(tmp_path / "audit.jsonl") == (True, [])
    actions = [json.loads(line)["action"] for line in audit_bytes.splitlines()]
    assert actions.count("deidentify") == 2 and actions.count("refuse_burned_in") == 1

    # the override writes the burned-in image too, and says so in the audit log
    args.allow_burned_in = True
    args.output = tmp_path / "out2"
    deid.run_deid(args)
    actions = [json.loads(line)["action"] for line in (tmp_path / "audit.jsonl").read_bytes().splitlines()]
    assert actions.count("override_burned_in") == 1


def test_deid_tree_refuses_an_output_inside_its_input(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(BadInput, match="inside the input"):
        deidentify_tree(tmp_path / "in", tmp_path / "in" / "out")
    with pytest.raises(BadInput, match="deid input not found"):
        deidentify_tree(tmp_path / "nowhere", tmp_path / "out")


@pytest.mark.parametrize("spelling", ["YES", "yes", "Y", "y", " Yes "])
def test_every_spelling_of_burned_in_annotation_is_refused(spelling):
    source = with_rgb_pixels(identified_dataset(), gradient_rgb())
    source.BurnedInAnnotation = spelling
    with pytest.raises(BurnedInAnnotationError):
        deidentify(source, UidMap())
