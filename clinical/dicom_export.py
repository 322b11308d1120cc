"""Results back to the clinic as DICOM: a Segmentation of the burn-depth classes and a Secondary
Capture of the overlay, both referencing the de-identified source image (highdicom).

Both take the DE-IDENTIFIED source header (`DicomFrame.dataset` from `dicom.iter_dicom_frames`,
or the output of `deid.deidentify`) and refuse one that is not marked Patient Identity Removed =
YES, so no original identifier can reach an output. The outputs copy that marking, sit in the
source's (new) study, and get new 2.25 UIDs of their own.

Segments: class index k of `depth.CLASS_NAMES` is segment number k (1..5); background (0) is
no segment. Codes: healthy skin = SCT 39937001 "Skin" (category SCT 91723000 "Anatomical
Structure"); the burn depths have no code in pydicom's SNOMED subset, so they carry local codes
of the private coding scheme 99HOLOBURN (category SCT 49755003 "Morphologically Abnormal
Structure"); map them to SNOMED when a PACS needs it.

Multi-frame sources: highdicom (0.28) can segment only ONE frame of a multi-frame image that
has no frame of reference (its issue #284), which is what a burn video or cine is. So pass a
(H, W) mask and `frame_index`: the object then references that source frame (Referenced Frame
Number). A (F, H, W) mask is accepted for single-frame sources (F = 1) and for multi-frame
sources that have a frame of reference.
"""
from __future__ import annotations

import copy
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from holoburn.clinical.audit import AuditLog, path_ref
from holoburn.clinical.deid import is_burned_in, write_dataset
from holoburn.clinical.depth import CLASS_NAMES, LABELS, NUM_CLASSES

MANUFACTURER = "holoburn"
LOCAL_SCHEME = "99HOLOBURN"
SEGMENTATION_SERIES_NUMBER = 9801
OVERLAY_SERIES_NUMBER = 9802
DECISION_SUPPORT = "decision support, not diagnosis"

_SKIN = hd.sr.CodedConcept(codes.SCT.Skin.value, "SCT", "Skin")
_ANATOMY = hd.sr.CodedConcept(
    codes.cid7150.AnatomicalStructure.value, "SCT", codes.cid7150.AnatomicalStructure.meaning
)
_ABNORMAL = hd.sr.CodedConcept(
    codes.cid7150.MorphologicallyAbnormalStructure.value,
    "SCT",
    codes.cid7150.MorphologicallyAbnormalStructure.meaning,
)
#: class name -> (category, type) codes of its segment
_SEGMENT_CODES: dict[str, tuple[hd.sr.CodedConcept, hd.sr.CodedConcept]] = {
    "healthy_skin": (_ANATOMY, _SKIN),
    "superficial": (_ABNORMAL, hd.sr.CodedConcept("BURN-SUPERFIC", LOCAL_SCHEME, "Superficial burn")),
    "superficial_partial": (
        _ABNORMAL,
        hd.sr.CodedConcept("BURN-SUP-PART", LOCAL_SCHEME, "Superficial partial-thickness burn"),
    ),
    "deep_partial": (
        _ABNORMAL,
        hd.sr.CodedConcept("BURN-DEEP-PART", LOCAL_SCHEME, "Deep partial-thickness burn"),
    ),
    "full_thickness": (
        _ABNORMAL,
        hd.sr.CodedConcept("BURN-FULL", LOCAL_SCHEME, "Full-thickness burn"),
    ),
}
_SOURCE_IMAGE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")
_DEID_KEYWORDS = ("PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence")
# Type 2 attributes highdicom copies from the source: present (maybe empty) after de-identification
_TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
)


def _software_version() -> str:
    try:
        return version("holoburn")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _algorithm() -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name="holoburn burn-depth segmentation",
        version=_software_version(),
        family=codes.cid7162.ArtificialIntelligence,
    )


def segment_descriptions() -> list[hd.seg.SegmentDescription]:
    """One description per class 1..5 (background has none), numbered like the class indices."""
    algorithm = _algorithm()
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=LABELS[CLASS_NAMES[number]],
            segmented_property_category=_SEGMENT_CODES[CLASS_NAMES[number]][0],
            segmented_property_type=_SEGMENT_CODES[CLASS_NAMES[number]][1],
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number in range(1, NUM_CLASSES)
    ]


def _check_deidentified(source_ds: Dataset) -> None:
    if str(source_ds.get("PatientIdentityRemoved", "")).upper() != "YES":
        raise ValueError(
            "source data set is not de-identified (Patient Identity Removed is not YES): export "
            "only the dataset of a DicomFrame from iter_dicom_frames() or of deid.deidentify()"
        )


def _frame_count(source_ds: Dataset) -> int:
    try:
        return max(1, int(source_ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _check_frame_index(source_ds: Dataset, frame_index: int | None) -> int | None:
    frames = _frame_count(source_ds)
    if frame_index is None:
        return None
    if not 0 <= frame_index < frames:
        raise ValueError(f"frame_index {frame_index} is outside the source's {frames} frame(s)")
    return frame_index


_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
# what makes highdicom treat a view as multi-frame or spatial; a one-frame view drops them
_MULTIFRAME_KEYWORDS = (
    "NumberOfFrames",
    "FrameIncrementPointer",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
    "FrameOfReferenceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
)


def _source_view(source_ds: Dataset, one_frame: bool) -> Dataset:
    """The metadata highdicom needs, without pixel data.

    `one_frame`: present one frame of a multi-frame image as a single-frame Secondary Capture
    without geometry, because highdicom cannot segment a frame of an old-style multi-frame
    image (no functional groups) or of one without a frame of reference. The references are
    put right afterwards by `_restore_references`.
    """
    view = Dataset()
    for element in source_ds:
        if element.keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            continue
        if one_frame and element.keyword in _MULTIFRAME_KEYWORDS:
            continue
        view.add(copy.deepcopy(element))  # never alter the caller's data set
    if one_frame:
        view.SOPClassUID = _SECONDARY_CAPTURE
    for keyword in _TYPE2_COPIED:
        if keyword not in view:
            setattr(view, keyword, None)
    if getattr(source_ds, "file_meta", None) is not None:
        view.file_meta = source_ds.file_meta
    return view


def _items(dataset: Dataset, parent: str = ""):
    """(item, keyword of the sequence holding it) for every nested item."""
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value or []:
                yield item, element.keyword
                yield from _items(item, element.keyword)


def _restore_references(derived: Dataset, source_ds: Dataset, frame_index: int) -> None:
    """Point every reference to the source back at its real SOP class, and source-image
    references at the frame the derived object shows."""
    for item, holder in _items(derived):
        if item.get("ReferencedSOPInstanceUID") != source_ds.SOPInstanceUID:
            continue
        item.ReferencedSOPClassUID = source_ds.SOPClassUID
        if holder == "SourceImageSequence":
            item.ReferencedFrameNumber = frame_index + 1


def _copy_deid_marking(source_ds: Dataset, target: Dataset) -> None:
    for keyword in _DEID_KEYWORDS:
        if keyword in source_ds:
            target[keyword] = source_ds[keyword]


def _source_reference(source_ds: Dataset, frame_index: int | None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source_ds.SOPClassUID
    item.ReferencedSOPInstanceUID = source_ds.SOPInstanceUID
    if frame_index is not None:
        item.ReferencedFrameNumber = frame_index + 1
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = _SOURCE_IMAGE_PURPOSE
    item.PurposeOfReferenceCodeSequence = Sequence([purpose])
    return item


def _as_mask(mask, rows: int, columns: int) -> np.ndarray:
    array = np.asarray(mask)
    if array.dtype.kind not in "ub" and not (array.dtype.kind == "i" and array.min(initial=0) >= 0):
        raise ValueError(f"mask must hold class indices (unsigned integers), got dtype {array.dtype}")
    if array.ndim not in (2, 3) or array.shape[-2:] != (rows, columns):
        raise ValueError(
            f"mask shape {array.shape} does not match the source image ({rows} x {columns}); "
            "expected (H, W) or (F, H, W) class indices at source size"
        )
    top = int(array.max(initial=0))
    if top >= NUM_CLASSES:
        raise ValueError(f"mask holds class {top}; burn-depth classes are 0..{NUM_CLASSES - 1}")
    return array.astype(np.uint8)


def write_segmentation(
    source_ds: Dataset,
    mask,
    out_path: str | os.PathLike,
    *,
    frame_index: int | None = None,
    audit: AuditLog | None = None,
) -> Path:
    """Write a DICOM Segmentation (BINARY, one segment per burn-depth class) of `mask`.

    source_ds: de-identified source header. mask: (H, W) or (F, H, W) uint8 class indices at
    source size. frame_index: 0-based source frame a (H, W) mask belongs to, for multi-frame
    sources. Returns the path written. Audited as "export" when `audit` is given.
    """
    _check_deidentified(source_ds)
    rows, columns = int(source_ds.Rows), int(source_ds.Columns)
    array = _as_mask(mask, rows, columns)
    frames = _frame_count(source_ds)
    frame_index = _check_frame_index(source_ds, frame_index)
    has_frame_of_reference = bool(source_ds.get("FrameOfReferenceUID"))

    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    one_frame = False
    if array.ndim == 2 and frames > 1:
        if frame_index is None:
            raise ValueError(f"the source has {frames} frames: pass frame_index= for a (H, W) mask")
        one_frame = True
    elif array.ndim == 3:
        if array.shape[0] != frames:
            raise ValueError(f"mask has {array.shape[0]} frames, the source {frames}")
        if not (has_frame_of_reference and "SharedFunctionalGroupsSequence" in source_ds):
            raise NotImplementedError(
                "highdicom segments all frames at once only for enhanced multi-frame images with "
                "a frame of reference: write one Segmentation per frame, with a (H, W) mask and "
                "frame_index="
            )

    seg = hd.seg.Segmentation(
        source_images=[_source_view(source_ds, one_frame=one_frame)],
        pixel_array=array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(),
        series_instance_uid=generate_uid(prefix=None),
        series_number=SEGMENTATION_SERIES_NUMBER,
        sop_instance_uid=generate_uid(prefix=None),
        instance_number=1 if frame_index is None else frame_index + 1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="holoburn",
        software_versions=_software_version(),
        device_serial_number="none",
        content_label="BURN_DEPTH",
        content_description=f"burn-depth classes by holoburn ({DECISION_SUPPORT})",
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    if one_frame:
        _restore_references(seg, source_ds, frame_index)
    seg.SeriesDescription = "holoburn burn-depth segmentation"
    _copy_deid_marking(source_ds, seg)
    out_path = Path(out_path)
    write_dataset(seg, out_path)
    if audit is not None:
        present = sorted({int(v) for v in np.unique(array)} - {0})
        audit.append(
            "export",
            {
                "file": path_ref(out_path),
                "SOPInstanceUID": str(seg.SOPInstanceUID),
                "source_SOPInstanceUID": str(source_ds.SOPInstanceUID),
                "StudyInstanceUID": str(seg.StudyInstanceUID),
            },
            {"object": "SEG", "classes_present": [CLASS_NAMES[c] for c in present], "frame_index": frame_index},
        )
    return out_path


def write_overlay_capture(
    source_ds: Dataset,
    overlay_rgb,
    out_path: str | os.PathLike,
    *,
    frame_index: int | None = None,
    audit: AuditLog | None = None,
) -> Path:
    """Write the overlay as a Secondary Capture image (RGB, 8 bits) in the source's study.

    source_ds: de-identified source header. overlay_rgb: (H, W, 3) uint8 RGB, any size.
    frame_index: 0-based source frame the overlay shows (multi-frame sources). The object
    references its source in Source Image Sequence. Returns the path written.
    """
    _check_deidentified(source_ds)
    overlay = np.asarray(overlay_rgb)
    if overlay.ndim != 3 or overlay.shape[-1] != 3 or overlay.dtype != np.uint8:
        raise ValueError(f"overlay must be (H, W, 3) uint8 RGB, got {overlay.shape} {overlay.dtype}")
    frame_index = _check_frame_index(source_ds, frame_index)
    if frame_index is None and _frame_count(source_ds) > 1:
        raise ValueError(f"the source has {_frame_count(source_ds)} frames: pass frame_index=")

    view = _source_view(source_ds, one_frame=False)
    orientation = source_ds.get("PatientOrientation")
    known = orientation is not None and len(orientation) == 2 and all(orientation)
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=view,
        pixel_array=np.ascontiguousarray(overlay),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=generate_uid(prefix=None),
        series_number=OVERLAY_SERIES_NUMBER,
        sop_instance_uid=generate_uid(prefix=None),
        instance_number=1 if frame_index is None else frame_index + 1,
        manufacturer=MANUFACTURER,
        # highdicom wants an orientation in the patient coordinate system; a bedside photo has
        # none, so a placeholder is given and the Type 2 attribute emptied again below
        patient_orientation=tuple(orientation) if known else ("L", "F"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    if not known:
        capture.PatientOrientation = None
    capture.SourceImageSequence = Sequence([_source_reference(source_ds, frame_index)])
    capture.DerivationDescription = f"burn-depth overlay by holoburn ({DECISION_SUPPORT})"
    capture.SeriesDescription = "holoburn burn-depth overlay"
    # the overlay shows the source's pixels: any identifying text in them is still there
    capture.BurnedInAnnotation = "YES" if is_burned_in(source_ds) else "NO"
    _copy_deid_marking(source_ds, capture)
    out_path = Path(out_path)
    write_dataset(capture, out_path)
    if audit is not None:
        audit.append(
            "export",
            {
                "file": path_ref(out_path),
                "SOPInstanceUID": str(capture.SOPInstanceUID),
                "source_SOPInstanceUID": str(source_ds.SOPInstanceUID),
                "StudyInstanceUID": str(capture.StudyInstanceUID),
            },
            {"object": "SC overlay", "frame_index": frame_index},
        )
    return out_path
