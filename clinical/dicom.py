"""DICOM input for the pipeline: files, folders and DICOMDIRs -> de-identified RGB frames.

Order per file: read -> check (empty, not DICOM, truncated, no pixels) -> de-identify in memory
(PS3.15 Annex E, `deid.deidentify`) -> audit -> decode pixels -> RGB uint8. No pixel is decoded
and nothing identifying leaves this module before de-identification.

Pixel decoding is pydicom's, with pylibjpeg (+ pylibjpeg-libjpeg, pylibjpeg-openjpeg) and
pyjpegls as plugins: uncompressed (implicit / explicit VR, little and big endian, deflated),
RLE Lossless, JPEG baseline / extended / lossless, JPEG-LS, JPEG 2000 (incl. HTJ2K).
Colour handling, to (H, W, 3) uint8 RGB:
- RGB: as is; more than 8 bits stored scaled to 0..255.
- YBR_FULL, YBR_FULL_422 (and YBR_ICT / YBR_RCT of JPEG 2000): converted to RGB.
- PALETTE COLOR: the palette is applied; 16-bit palette entries scaled to 8 bits.
- MONOCHROME1 / MONOCHROME2: modality LUT (rescale), then the first VOI window of the file
  (Window Center / Width, LINEAR, LINEAR_EXACT or SIGMOID) or its VOI LUT; without either,
  8-bit data is shown as stored and deeper data is stretched over the file's own min..max
  (all frames together, so a cine loop does not flicker); MONOCHROME1 is inverted; the grey
  value is replicated to three channels.

Every input file gives either frames (`DicomFrame`) or one `DicomSkip` with a reason; a file
that stops decoding half way gives its good frames, then a `DicomSkip`. Iteration never stops
for a bad file. Skips name the file by its number in the iteration and by `path_ref()` (a hash
of the path), never by its path or name: file names often hold patient names.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, convert_color_space, get_decoder
from pydicom.uid import UID

from holoburn.clinical.audit import AuditLog, path_ref
from holoburn.clinical.deid import (
    DAMAGED_DICOM,
    DicomInputError,
    UidMap,
    UnnamedFile,
    audit_reference,
    deidentify,
    is_dicomdir,
    read_dicom,
    redact,
    walk_files,
)

_PIXEL_TAGS = frozenset(tag_for_keyword(k) for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))

#: what decoding damaged pixel data raises: a damaged file's kinds, and pydicom's RuntimeError
#: "Unable to decode as exceptions were raised by all available plugins" (a corrupt JPEG stream)
DAMAGED_PIXELS = (*DAMAGED_DICOM, RuntimeError)


@dataclass
class DicomFrame:
    """One decoded frame of a de-identified DICOM image."""

    source: str  # "dicom:<de-identified SOP Instance UID>"
    index: int  # 0-based frame index within the file
    timestamp_s: float  # seconds from the first frame (Frame Time / Frame Time Vector / 0)
    image: np.ndarray  # (H, W, 3) uint8 RGB
    dataset: Dataset = field(repr=False)  # de-identified header, pixel data left out; shared by the file's frames
    file_ref: str = ""  # path_ref() of the input file
    frame_count: int = 1

    ok = True


@dataclass
class DicomSkip:
    """A file (or the rest of one) that was not turned into frames, and why."""

    file_number: int  # 1-based position of the file in this iteration
    file_ref: str  # path_ref() of the file: its path is never shown
    kind: str  # short code: empty, not_dicom, truncated, no_pixel_data, burned_in, decode_error, ...
    reason: str  # one sentence for the user

    ok = False

    @property
    def source(self) -> str:
        return f"dicom:{self.file_ref}"

    def __str__(self) -> str:
        return f"DICOM file {self.file_number} ({self.file_ref}) skipped: {self.kind}: {self.reason}"


DicomRecord = DicomFrame | DicomSkip


def iter_dicom_frames(
    path: str | os.PathLike,
    uid_map: UidMap,
    audit: AuditLog | None = None,
    allow_burned_in: bool = False,
) -> Iterator[DicomRecord]:
    """Yield `DicomFrame`s and `DicomSkip`s from a file, a folder (recursively) or a DICOMDIR.

    A folder is walked in sorted order; a DICOMDIR found inside it is skipped (kind "dicomdir")
    because the walk reads its files anyway. A DICOMDIR given as `path` is followed record by
    record. `uid_map` must be the run's map so that UIDs stay consistent across files.
    Each file is audited ("read", with the new UIDs, or with the skip reason).
    """
    root = Path(path)
    if not root.exists():  # named by its hash only: paths can hold patient names
        raise DicomInputError("missing", f"DICOM source not found ({path_ref(root)}): check the path given")
    number = 0
    for file_path in _input_files(root, audit):
        number += 1
        if isinstance(file_path, DicomSkip):
            yield DicomSkip(number, file_path.file_ref, file_path.kind, file_path.reason)
            continue
        yield from _records_of_file(number, file_path, uid_map, audit, allow_burned_in)


def _input_files(root: Path, audit: AuditLog | None) -> Iterator[Path | DicomSkip]:
    if root.is_dir():
        yield from walk_files(root)
        return
    if root.name.upper() == "DICOMDIR" or _looks_like_dicomdir(root):
        yield from _dicomdir_files(root, audit)
        return
    yield root


def _looks_like_dicomdir(path: Path) -> bool:
    try:  # header only: values skipped, pixel data not read
        with UnnamedFile(path) as stream:
            header = pydicom.dcmread(stream, stop_before_pixels=True, specific_tags=["DirectoryRecordSequence"])
        return is_dicomdir(header)  # reads a value of the file meta: damage can show here too
    except DAMAGED_DICOM:
        return False  # reported when the file itself is read


def _dicomdir_files(dicomdir: Path, audit: AuditLog | None) -> Iterator[Path | DicomSkip]:
    ref = path_ref(dicomdir)
    try:
        file_set = FileSet(dicomdir)
        paths = [Path(instance.path) for instance in file_set]
    except DAMAGED_DICOM as error:  # a damaged index: report it, there is nothing else to read
        if audit is not None:
            audit.append("read", {"file": ref}, {"outcome": "skipped", "kind": "unreadable"})
        yield DicomSkip(0, ref, "unreadable", f"cannot read the DICOMDIR: {type(error).__name__}: {redact(error)}")
        return
    if audit is not None:  # the index itself holds patient names: reading it is an access
        audit.append("read", {"file": ref}, {"outcome": "dicomdir index", "referenced_files": len(paths)})
    for file_path in paths:
        if file_path.is_file():
            yield file_path
        else:
            yield DicomSkip(0, path_ref(file_path), "missing", "referenced by the DICOMDIR but not found")


def _records_of_file(
    number: int, path: Path, uid_map: UidMap, audit: AuditLog | None, allow_burned_in: bool
) -> Iterator[DicomRecord]:
    ref = path_ref(path)

    def skipped(kind: str, reason: str, **details) -> DicomSkip:
        if audit is not None and kind != "burned_in":  # refusals are audited by deidentify()
            audit.append("read", {"file": ref}, {"outcome": "skipped", "kind": kind, **details})
        return DicomSkip(number, ref, kind, reason)

    try:
        source = read_dicom(path)
        dataset = deidentify(source, uid_map, allow_burned_in=allow_burned_in, audit=audit, source_ref=ref)
    except DicomInputError as error:
        yield skipped(error.kind, error.reason)
        return
    del source  # from here on only the de-identified copy exists

    frame_count = _frame_count(dataset)
    implausible = implausible_size(dataset, frame_count)
    if implausible:  # refused before anything is allocated for it
        yield skipped("implausible_size", implausible)
        return
    header = Dataset({tag: element for tag, element in dataset.items() if tag not in _PIXEL_TAGS})
    header.file_meta = dataset.file_meta
    transfer_syntax = UID(dataset.file_meta.get("TransferSyntaxUID", ""))
    if audit is not None:
        audit.append(
            "read",
            audit_reference(dataset, ref),
            {
                "outcome": "de-identified in memory before decoding",
                "frames": frame_count,
                "transfer_syntax": transfer_syntax.name if transfer_syntax else "unknown",
                "photometric": str(dataset.get("PhotometricInterpretation", "")),
            },
        )
    source_id = f"dicom:{dataset.get('SOPInstanceUID') or ref}"
    times = frame_times(dataset, frame_count)
    decoded = 0
    try:
        for image in rgb_frames(dataset):
            if decoded >= frame_count:
                break  # more frames in the pixel data than Number of Frames says: ignore them
            yield DicomFrame(source_id, decoded, times[decoded], image, header, ref, frame_count)
            decoded += 1
    except DicomInputError as error:
        yield skipped(error.kind, error.reason, frames_decoded=decoded)
    except DAMAGED_PIXELS as error:  # a decoder plugin failing on damaged data
        where = f"frame {decoded + 1} of {frame_count}: " if frame_count > 1 else ""
        yield skipped(
            "decode_error",
            f"{where}cannot decode the pixel data ({transfer_syntax.name or 'unknown transfer syntax'}): "
            f"{type(error).__name__}: {redact(error)}",
            frames_decoded=decoded,
        )


# -- pixels --------------------------------------------------------------------------------------


#: the most samples one file may decode to (frames x rows x columns x samples per pixel): 2^31,
#: 6 GiB of RGB at 8 bits, far beyond any clinical photograph series
MAX_SAMPLES = 1 << 31


def implausible_size(dataset: Dataset, frame_count: int) -> str | None:
    """Why the header's size cannot be true (None when it can): more samples than MAX_SAMPLES, or,
    for uncompressed pixel data, more frames than the data holds."""
    try:
        rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
        samples = int(dataset.get("SamplesPerPixel", 1) or 1)
        bits = int(dataset.get("BitsAllocated", 8) or 8)
    except (TypeError, ValueError):
        return "Rows, Columns, Samples per Pixel or Bits Allocated is not a number"
    total = frame_count * rows * columns * samples
    if total > MAX_SAMPLES:
        return (f"{frame_count} frames of {columns}x{rows}x{samples} would be {total} samples "
                f"(at most {MAX_SAMPLES})")
    data = dataset.get("PixelData")
    syntax = UID(dataset.file_meta.get("TransferSyntaxUID", "")) if hasattr(dataset, "file_meta") else UID("")
    if data is not None and syntax and not syntax.is_compressed and rows and columns:
        frame_bytes = rows * columns * samples * bits // 8
        held = len(data) // frame_bytes if frame_bytes else 0
        if frame_count > held + 1:
            return f"Number of Frames says {frame_count}, the pixel data holds {held}"
    return None


def _frame_count(dataset: Dataset) -> int:
    try:
        return max(1, int(dataset.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def frame_times(dataset: Dataset, frame_count: int) -> list[float]:
    """Seconds from the first frame for every frame: Frame Time Vector (increments, ms), Frame
    Time (ms), Cine Rate or Recommended Display Frame Rate (frames/s); 0.0 when none is given."""
    vector = dataset.get("FrameTimeVector")
    if vector is not None and len(vector) == frame_count:
        return [float(t) / 1000.0 for t in np.cumsum([float(v) for v in vector])]
    for keyword, to_seconds in (
        ("FrameTime", lambda v: float(v) / 1000.0),
        ("CineRate", lambda v: 1.0 / float(v)),
        ("RecommendedDisplayFrameRate", lambda v: 1.0 / float(v)),
    ):
        value = dataset.get(keyword)
        try:
            step = to_seconds(value) if value not in (None, "") else None
        except (TypeError, ValueError, ZeroDivisionError):
            step = None
        if step and step > 0:
            return [i * step for i in range(frame_count)]
    return [0.0] * frame_count


def _require(dataset: Dataset, *keywords: str) -> None:
    missing = [k for k in keywords if dataset.get(k) in (None, "")]
    if missing:
        raise DicomInputError("unsupported", f"image attributes missing: {', '.join(missing)}")


def rgb_frames(dataset: Dataset) -> Iterator[np.ndarray]:
    """Decode every frame of a (de-identified) image data set to (H, W, 3) uint8 RGB."""
    _require(dataset, "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated")
    transfer_syntax = UID(dataset.file_meta.get("TransferSyntaxUID", ""))
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        raise DicomInputError(
            "unsupported", f"no pixel decoder for transfer syntax {transfer_syntax.name or transfer_syntax!s}"
        ) from None
    if not decoder.is_available:
        raise DicomInputError(
            "unsupported",
            f"no decoder plugin installed for {transfer_syntax.name}: install pylibjpeg, "
            "pylibjpeg-libjpeg, pylibjpeg-openjpeg and pyjpegls",
        )
    photometric = str(dataset.PhotometricInterpretation).strip().upper()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        to_grey = _grey_mapping(dataset, decoder)
        for array, _ in decoder.iter_array(dataset):
            grey = to_grey(array)
            if photometric == "MONOCHROME1":
                grey = 255 - grey
            yield np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=-1))
        return
    if photometric == "PALETTE COLOR":
        for array, _ in decoder.iter_array(dataset):
            rgb = apply_color_lut(array, dataset)
            yield _to_uint8(rgb, 16 if rgb.dtype != np.uint8 else 8)
        return
    for array, properties in decoder.iter_array(dataset):
        if array.ndim != 3 or array.shape[-1] != 3:
            raise DicomInputError(
                "unsupported", f"photometric interpretation {photometric} with shape {array.shape}"
            )
        now = str(properties.get("photometric_interpretation", photometric)).upper()
        if now in ("YBR_FULL", "YBR_FULL_422"):  # left as YCbCr by the decoder
            array = convert_color_space(array, now, "RGB")
        elif now != "RGB":
            raise DicomInputError("unsupported", f"photometric interpretation {now} is not supported")
        yield _to_uint8(array, int(dataset.get("BitsStored", dataset.BitsAllocated)))


def _to_uint8(array: np.ndarray, bits: int) -> np.ndarray:
    if array.dtype == np.uint8 and bits <= 8:
        return np.ascontiguousarray(array)
    top = float(2**bits - 1)
    scaled = np.clip(np.rint(array.astype(np.float32) * (255.0 / top)), 0, 255)
    return np.ascontiguousarray(scaled.astype(np.uint8))


def _first(value) -> float | None:
    if value is None or value == "":
        return None
    if hasattr(value, "__len__") and not isinstance(value, str):
        if not len(value):
            return None
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _voi_source(dataset: Dataset) -> Dataset:
    """Where the VOI attributes are: the data set, or the shared functional groups of an
    enhanced multi-frame image."""
    if dataset.get("WindowCenter") is not None or "VOILUTSequence" in dataset:
        return dataset
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if shared:
        voi = shared[0].get("FrameVOILUTSequence")
        if voi:
            return voi[0]
    return dataset


def _window_function(center: float, width: float, function: str):
    if function == "SIGMOID":
        return lambda x: 255.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        return lambda x: np.clip((x - center) / width + 0.5, 0.0, 1.0) * 255.0
    if width <= 1:  # LINEAR with width 1 is a threshold
        return lambda x: np.where(x > center - 0.5, 255.0, 0.0)
    return lambda x: np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0) * 255.0


def _grey_mapping(dataset: Dataset, decoder):
    """A function stored frame -> (H, W) uint8 grey, fixed for the whole file."""
    rescaled = any(k in dataset for k in ("RescaleSlope", "RescaleIntercept", "ModalityLUTSequence"))
    modality = (lambda a: apply_modality_lut(a, dataset)) if rescaled else (lambda a: a)

    voi = _voi_source(dataset)
    center, width = _first(voi.get("WindowCenter")), _first(voi.get("WindowWidth"))
    if center is not None and width is not None and width > 0:
        function = str(voi.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        window = _window_function(center, width, function)
        return lambda a: np.rint(window(modality(a).astype(np.float64))).astype(np.uint8)
    if "VOILUTSequence" in voi:
        lut_top = float(max(np.max(item.LUTData) for item in voi.VOILUTSequence if "LUTData" in item) or 1)
        return lambda a: np.rint(
            np.clip(apply_voi(modality(a), voi).astype(np.float64) * (255.0 / lut_top), 0, 255)
        ).astype(np.uint8)

    bits = int(dataset.get("BitsStored", dataset.get("BitsAllocated", 8)))
    signed = int(dataset.get("PixelRepresentation", 0)) == 1
    if bits <= 8 and not rescaled and "FloatPixelData" not in dataset and "DoubleFloatPixelData" not in dataset:
        low = -(2 ** (bits - 1)) if signed else 0
        high = low + 2**bits - 1
    else:  # stretch over the file's own range, all frames together
        low, high = np.inf, -np.inf
        for array, _ in decoder.iter_array(dataset):
            values = modality(array)
            low, high = min(low, float(np.min(values))), max(high, float(np.max(values)))
    span = high - low
    if not np.isfinite(span) or span <= 0:
        return lambda a: np.zeros(a.shape[:2], np.uint8)
    return lambda a: np.rint(
        np.clip((modality(a).astype(np.float64) - low) * (255.0 / span), 0, 255)
    ).astype(np.uint8)


__all__ = ["DicomFrame", "DicomSkip", "DicomRecord", "iter_dicom_frames", "rgb_frames", "frame_times", "is_dicomdir"]
