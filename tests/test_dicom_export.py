"""Results back as DICOM: Segmentation and Secondary Capture referencing the de-identified
source, read back with pydicom and highdicom; no identifier in any exported byte."""
from __future__ import annotations

import pytest

pytest.importorskip("pydicom", reason="DICOM tests need pydicom: pip install -e '.[test]' (the GPU lab lacks it)")
pytest.importorskip("highdicom", reason="DICOM tests need highdicom: pip install -e '.[test]' (the GPU lab lacks it)")

import json
import logging

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import RLELossless, SecondaryCaptureImageStorage, SegmentationStorage

from holoburn.clinical.audit import AuditLog, verify
from holoburn.clinical.deid import UidMap
from holoburn.clinical.depth import CLASS_NAMES, LABELS
from holoburn.clinical.dicom import iter_dicom_frames
from holoburn.clinical.dicom_export import write_overlay_capture, write_segmentation
from test_deid import (
    PATIENT_FILE_NAME,
    dataset_bytes,
    find_identifiers,
    gradient_rgb,
    identified_dataset,
    save,
    with_rgb_pixels,
)


def _class_mask(rows: int, columns: int, shift: int = 0) -> np.ndarray:
    """Every class 0..5 present, in vertical bands."""
    mask = np.zeros((rows, columns), np.uint8)
    for number in range(1, 6):
        mask[:, (number * columns) // 6 + shift:((number + 1) * columns) // 6] = number
    return mask


def _frames_of(path, audit=None, uid_map=None):
    return [r for r in iter_dicom_frames(path, uid_map or UidMap(), audit=audit) if r.ok]


@pytest.fixture
def photo(tmp_path):
    """A de-identified single-frame photo, as the pipeline gets it."""
    path = tmp_path / f"{PATIENT_FILE_NAME}.dcm"
    save(with_rgb_pixels(identified_dataset(), gradient_rgb()), path)
    return _frames_of(path)[0]


@pytest.fixture
def cine(tmp_path):
    """A de-identified 3-frame RLE cine without frame of reference."""
    ds = identified_dataset(2)
    del ds.FrameOfReferenceUID
    rgb = gradient_rgb()
    with_rgb_pixels(ds, rgb)
    ds.NumberOfFrames = 3
    ds.PixelData = np.stack([rgb] * 3).tobytes()
    ds.compress(RLELossless, generate_instance_uid=False)
    path = tmp_path / f"{PATIENT_FILE_NAME}_cine.dcm"
    save(ds, path)
    return _frames_of(path)


def _label_map_from_seg(seg: pydicom.Dataset) -> dict[int, np.ndarray]:
    """Rebuild the class mask from the SEG frames: {segment number: binary frame}."""
    pixels = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    masks = {}
    for frame, groups in zip(pixels, seg.PerFrameFunctionalGroupsSequence):
        number = int(groups.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        masks[number] = frame.astype(bool)
    return masks


def test_segmentation_round_trip(tmp_path, photo):
    mask = _class_mask(32, 48)
    path = write_segmentation(photo.dataset, mask, tmp_path / "seg.dcm")
    seg = pydicom.dcmread(path)
    assert seg.SOPClassUID == SegmentationStorage and seg.SegmentationType == "BINARY"
    assert seg.Modality == "SEG"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [LABELS[c] for c in CLASS_NAMES[1:]]
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [1, 2, 3, 4, 5]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "39937001"  # skin
    # references: the de-identified source, same (new) study, own new series and instance
    reference = seg.ReferencedSeriesSequence[0]
    assert reference.SeriesInstanceUID == photo.dataset.SeriesInstanceUID
    assert reference.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == photo.dataset.SOPInstanceUID
    assert seg.StudyInstanceUID == photo.dataset.StudyInstanceUID
    assert seg.SeriesInstanceUID != photo.dataset.SeriesInstanceUID and seg.SOPInstanceUID.startswith("2.25.")
    assert seg.PatientIdentityRemoved == "YES" and seg.PatientName == photo.dataset.PatientName  # the pseudonym
    assert seg.PatientID == photo.dataset.PatientID and seg.PatientID.startswith("ANON-")
    # the pixels: each segment is exactly its class
    masks = _label_map_from_seg(seg)
    for number in range(1, 6):
        assert np.array_equal(masks[number], mask == number), number
    # highdicom reads it back to the same label map
    label_map = hd.seg.segread(path).get_pixels_by_source_instance(
        source_sop_instance_uids=[photo.dataset.SOPInstanceUID], combine_segments=True
    )
    assert np.array_equal(label_map[0], mask)


def test_overlay_capture_round_trip(tmp_path, photo):
    overlay = photo.image.copy()
    overlay[:8] = (140, 0, 200)
    path = write_overlay_capture(photo.dataset, overlay, tmp_path / "overlay.dcm")
    capture = pydicom.dcmread(path)
    assert capture.SOPClassUID == SecondaryCaptureImageStorage
    assert capture.PhotometricInterpretation == "RGB" and capture.BitsAllocated == 8
    assert np.array_equal(capture.pixel_array, overlay)
    source = capture.SourceImageSequence[0]
    assert source.ReferencedSOPInstanceUID == photo.dataset.SOPInstanceUID
    assert source.ReferencedSOPClassUID == photo.dataset.SOPClassUID
    assert source.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    assert capture.StudyInstanceUID == photo.dataset.StudyInstanceUID
    assert capture.PatientIdentityRemoved == "YES" and capture.BurnedInAnnotation == "NO"
    assert not capture.get("PatientOrientation")  # unknown for a photo: left empty


def test_multi_frame_source_references_the_frame(tmp_path, cine):
    assert len(cine) == 3
    frame = cine[1]
    before = dataset_bytes(frame.dataset)
    seg = pydicom.dcmread(write_segmentation(frame.dataset, _class_mask(32, 48, 2), tmp_path / "seg.dcm", frame_index=1))
    sources = [
        item
        for groups in seg.PerFrameFunctionalGroupsSequence
        for derivation in groups.DerivationImageSequence
        for item in derivation.SourceImageSequence
    ]
    assert sources and all(int(s.ReferencedFrameNumber) == 2 for s in sources)
    assert all(s.ReferencedSOPClassUID == frame.dataset.SOPClassUID for s in sources)
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPClassUID == frame.dataset.SOPClassUID
    capture = pydicom.dcmread(write_overlay_capture(frame.dataset, frame.image, tmp_path / "sc.dcm", frame_index=1))
    assert int(capture.SourceImageSequence[0].ReferencedFrameNumber) == 2
    assert dataset_bytes(frame.dataset) == before  # exporting never alters the source header


def test_segmentation_of_a_source_with_frame_of_reference(tmp_path):
    """An MR slice (geometry, frame of reference) from pydicom's test data."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    for element in identified_dataset(3, sop_class=ds.SOPClassUID):
        if element.keyword not in ("SOPClassUID", "FrameOfReferenceUID"):
            ds[element.tag] = element
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    save(ds, tmp_path / "mr.dcm")
    frame = _frames_of(tmp_path / "mr.dcm")[0]
    seg = pydicom.dcmread(write_segmentation(frame.dataset, _class_mask(64, 64), tmp_path / "seg.dcm"))
    assert seg.FrameOfReferenceUID == frame.dataset.FrameOfReferenceUID
    assert find_identifiers(dataset_bytes(seg)) == []


def test_bad_arguments_are_refused_with_reasons(tmp_path, photo, cine):
    raw = with_rgb_pixels(identified_dataset(), gradient_rgb())
    with pytest.raises(ValueError, match="not de-identified"):
        write_segmentation(raw, _class_mask(32, 48), tmp_path / "x.dcm")
    with pytest.raises(ValueError, match="not de-identified"):
        write_overlay_capture(raw, gradient_rgb(), tmp_path / "x.dcm")
    with pytest.raises(ValueError, match=r"\(16, 16\) does not match"):
        write_segmentation(photo.dataset, np.zeros((16, 16), np.uint8), tmp_path / "x.dcm")
    with pytest.raises(ValueError, match="class 7"):
        write_segmentation(photo.dataset, np.full((32, 48), 7, np.uint8), tmp_path / "x.dcm")
    with pytest.raises(ValueError, match="frame_index"):
        write_segmentation(cine[0].dataset, _class_mask(32, 48), tmp_path / "x.dcm")
    with pytest.raises(ValueError, match="outside"):
        write_segmentation(cine[0].dataset, _class_mask(32, 48), tmp_path / "x.dcm", frame_index=3)
    with pytest.raises(NotImplementedError, match="one Segmentation per frame"):
        write_segmentation(cine[0].dataset, np.stack([_class_mask(32, 48)] * 3), tmp_path / "x.dcm")
    with pytest.raises(ValueError, match="uint8 RGB"):
        write_overlay_capture(photo.dataset, np.zeros((32, 48), np.uint8), tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


def test_an_empty_mask_still_gives_a_valid_segmentation(tmp_path, photo):
    seg = pydicom.dcmread(write_segmentation(photo.dataset, np.zeros((32, 48), np.uint8), tmp_path / "seg.dcm"))
    assert not seg.pixel_array.any()


def test_no_identifier_in_any_exported_byte(tmp_path, caplog, capsys):
    """Identified files in -> read, de-identify, segment, capture -> search every output."""
    caplog.set_level(logging.DEBUG)
    inputs = tmp_path / PATIENT_FILE_NAME
    inputs.mkdir()
    save(with_rgb_pixels(identified_dataset(1), gradient_rgb()), inputs / f"{PATIENT_FILE_NAME}_photo.dcm")
    burned = with_rgb_pixels(identified_dataset(2), gradient_rgb())
    burned.BurnedInAnnotation = "YES"
    save(burned, inputs / f"{PATIENT_FILE_NAME}_burned.dcm")
    cine = with_rgb_pixels(identified_dataset(3), gradient_rgb())
    cine.NumberOfFrames = 2
    cine.PixelData = np.stack([gradient_rgb()] * 2).tobytes()
    save(cine, inputs / f"{PATIENT_FILE_NAME}_cine.dcm")

    out = tmp_path / "results"
    audit_path = tmp_path / "audit.jsonl"
    audit = AuditLog(audit_path)
    uid_map = UidMap()
    written = []
    for frame in iter_dicom_frames(inputs, uid_map, audit=audit, allow_burned_in=True):
        assert frame.ok
        index = frame.index if frame.frame_count > 1 else None
        name = f"{frame.source.removeprefix('dicom:')}_{frame.index}"
        written.append(write_segmentation(frame.dataset, _class_mask(32, 48), out / f"{name}_seg.dcm", frame_index=index, audit=audit))
        written.append(write_overlay_capture(frame.dataset, frame.image, out / f"{name}_sc.dcm", frame_index=index, audit=audit))
    assert len(written) == 2 * (1 + 1 + 2)

    blobs: list[bytes | str] = [path.read_bytes() for path in written]
    blobs += [str(pydicom.dcmread(path)) for path in written]
    blobs += [str(path.relative_to(tmp_path)) for path in written]
    blobs.append(audit_path.read_bytes())
    blobs.append("\n".join(r.getMessage() for r in caplog.records))
    captured = capsys.readouterr()
    blobs.append(captured.out + captured.err)
    for blob in blobs:
        assert find_identifiers(blob) == [], find_identifiers(blob)
    # the burned-in image's overlay says so: its pixels may still carry identifying text
    burned_captures = [pydicom.dcmread(p) for p in written if p.name.endswith("_sc.dcm")]
    assert sorted(c.BurnedInAnnotation for c in burned_captures) == ["NO", "NO", "NO", "YES"]

    assert verify(audit_path) == (True, [])
    actions = [json.loads(line)["action"] for line in audit_path.read_text().splitlines()]
    assert actions.count("export") == len(written)
    assert actions.count("override_burned_in") == 1 and actions.count("read") == 3
