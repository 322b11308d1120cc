"""DICOM input: every listed transfer syntax and photometric interpretation, multi-frame,
DICOMDIR, bad files, burned-in refusal, and no identifier in any output.

Real files only: most are built here with pydicom (RLE, JPEG-LS and JPEG 2000 encoded by
`Dataset.compress` with pydicom / pyjpegls / pylibjpeg-openjpeg; JPEG baseline encoded with
Pillow and encapsulated); the ones no installed encoder writes (JPEG lossless, JPEG extended,
JPEG 2000 with YBR_RCT, big endian, deflated, a 30-frame JPEG YBR_FULL_422 cine) are pydicom's
bundled test files, re-saved with the same identifying values injected.
"""
from __future__ import annotations

import pytest

pytest.importorskip("pydicom", reason="DICOM tests need pydicom: pip install -e '.[test]' (the GPU lab lacks it)")

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.fileset import FileSet
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from holoburn.clinical.audit import AuditLog, verify
from holoburn.clinical.deid import UidMap
from holoburn.clinical.dicom import DicomFrame, DicomSkip, iter_dicom_frames
from test_deid import (
    PATIENT_FILE_NAME,
    dataset_bytes,
    find_identifiers,
    gradient_rgb,
    identified_dataset,
    save,
    with_rgb_pixels,
)

ROWS, COLUMNS = 32, 48


# -- building real files ---------------------------------------------------------------------


def _image(number: int, photometric: str, samples: int, bits: int = 8, frames: int = 1) -> Dataset:
    ds = identified_dataset(number)
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if samples == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    return ds


def _frames(rgb: np.ndarray, count: int) -> list[np.ndarray]:
    """`count` different frames: the gradient brightened step by step (no hard edges for JPEG)."""
    return [np.clip(rgb.astype(np.int16) + 6 * i, 0, 255).astype(np.uint8) for i in range(count)]


def _native(ds: Dataset, frames: list[np.ndarray]) -> Dataset:
    dtype = "<u2" if ds.BitsAllocated == 16 else np.uint8
    ds.PixelData = b"".join(np.ascontiguousarray(f).astype(dtype).tobytes() for f in frames)
    return ds


def _ybr_422_bytes(rgb: np.ndarray) -> bytes:
    """YBR_FULL_422 native packing: per pixel pair Y0 Y1 Cb Cr, chroma averaged."""
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL").astype(np.float32)
    y = ybr[..., 0].reshape(ROWS, COLUMNS // 2, 2)
    cb = ybr[..., 1].reshape(ROWS, COLUMNS // 2, 2).mean(-1, keepdims=True)
    cr = ybr[..., 2].reshape(ROWS, COLUMNS // 2, 2).mean(-1, keepdims=True)
    return np.rint(np.concatenate([y, cb, cr], -1)).clip(0, 255).astype(np.uint8).tobytes()


def _jpeg(ds: Dataset, frames: list[np.ndarray], **pillow) -> Dataset:
    streams = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=95, **pillow)
        streams.append(buffer.getvalue())
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate(streams)
    ds["PixelData"].VR = "OB"
    return ds


PALETTE_INDEX = np.arange(256)
PALETTE_RGB = np.stack([PALETTE_INDEX, 255 - PALETTE_INDEX, (PALETTE_INDEX * 3) % 256], -1).astype(np.uint8)


def _palette(ds: Dataset) -> Dataset:
    ds.RedPaletteColorLookupTableDescriptor = [256, 0, 16]
    ds.GreenPaletteColorLookupTableDescriptor = [256, 0, 16]
    ds.BluePaletteColorLookupTableDescriptor = [256, 0, 16]
    for channel, name in enumerate(("Red", "Green", "Blue")):
        entries = (PALETTE_RGB[:, channel].astype("<u2") * 257).tobytes()  # 16-bit entries
        setattr(ds, f"{name}PaletteColorLookupTableData", entries)
    return ds


def _compressed(ds: Dataset, syntax, **kwargs) -> Dataset:
    ds.compress(syntax, generate_instance_uid=False, **kwargs)
    return ds


@dataclass
class Case:
    name: str
    dataset: Dataset
    expected: list[np.ndarray] | None  # per frame (H, W, 3) uint8, or None: checked by shape/range
    max_error: int = 0  # largest allowed |difference| per pixel
    mean_error: float = 0.0
    source: str = "built"  # or the pydicom test file it comes from


def built_cases() -> list[Case]:
    rgb = gradient_rgb(ROWS, COLUMNS)
    grey = rgb[..., 1]
    cases: list[Case] = []
    n = iter(range(100, 1000))

    cases.append(Case("rgb_explicit", _native(_image(next(n), "RGB", 3), [rgb]), [rgb]))
    implicit = _native(_image(next(n), "RGB", 3), [rgb])
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    cases.append(Case("rgb_implicit", implicit, [rgb]))
    planar = _image(next(n), "RGB", 3)
    planar.PlanarConfiguration = 1
    planar.PixelData = np.moveaxis(rgb, -1, 0).tobytes()
    cases.append(Case("rgb_planar_explicit", planar, [rgb]))
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    cases.append(Case("ybr_full_explicit", _native(_image(next(n), "YBR_FULL", 3), [ybr]), [rgb], 2, 1.0))
    ybr422 = _image(next(n), "YBR_FULL_422", 3)
    ybr422.PixelData = _ybr_422_bytes(rgb)
    cases.append(Case("ybr_full_422_explicit", ybr422, [rgb], 8, 3.0))
    index = (rgb[..., 0].astype(np.uint16) + rgb[..., 1]).astype(np.uint8)
    palette = _palette(_native(_image(next(n), "PALETTE COLOR", 1), [index]))
    cases.append(Case("palette_explicit", palette, [PALETTE_RGB[index]]))
    grey3 = np.repeat(grey[..., None], 3, -1)
    cases.append(Case("mono2_8bit_explicit", _native(_image(next(n), "MONOCHROME2", 1), [grey]), [grey3]))
    cases.append(Case("mono1_8bit_explicit", _native(_image(next(n), "MONOCHROME1", 1), [grey]), [255 - grey3]))

    # 12 bits stored, rescaled to HU-like values, with a window: the window decides the grey
    stored = (grey.astype(np.uint16) * 16).astype(np.uint16)  # 0..4080
    windowed = _image(next(n), "MONOCHROME2", 1, bits=12)
    windowed.RescaleSlope, windowed.RescaleIntercept = 1, -1024
    windowed.WindowCenter, windowed.WindowWidth = 0, 2001
    _native(windowed, [stored])
    values = stored.astype(np.float64) - 1024
    expected = np.clip((values - (0 - 0.5)) / 2000 + 0.5, 0, 1) * 255
    cases.append(Case("mono2_12bit_window", windowed, [np.repeat(np.rint(expected).astype(np.uint8)[..., None], 3, -1)], 1))
    unwindowed = _native(_image(next(n), "MONOCHROME2", 1, bits=16), [stored])
    span = np.rint((stored - stored.min()) * (255.0 / (stored.max() - stored.min()))).astype(np.uint8)
    cases.append(Case("mono2_16bit_no_window", unwindowed, [np.repeat(span[..., None], 3, -1)], 1))
    rgb16 = _native(_image(next(n), "RGB", 3, bits=16), [rgb.astype(np.uint16) * 257])
    cases.append(Case("rgb_16bit_explicit", rgb16, [rgb]))

    # multi-frame, with frame timing
    cine = _native(_image(next(n), "RGB", 3, frames=4), _frames(rgb, 4))
    cine.FrameTime = 40.0
    cases.append(Case("rgb_multiframe_explicit", cine, _frames(rgb, 4)))

    # RLE Lossless (pydicom's own encoder)
    cases.append(Case("rgb_rle", _compressed(_native(_image(next(n), "RGB", 3), [rgb]), RLELossless), [rgb]))
    cases.append(Case("ybr_full_rle", _compressed(_native(_image(next(n), "YBR_FULL", 3), [ybr]), RLELossless), [rgb], 2, 1.0))
    cases.append(Case("mono2_rle", _compressed(_native(_image(next(n), "MONOCHROME2", 1), [grey]), RLELossless), [grey3]))
    palette_rle = _palette(_compressed(_native(_image(next(n), "PALETTE COLOR", 1), [index]), RLELossless))
    cases.append(Case("palette_rle", palette_rle, [PALETTE_RGB[index]]))
    cine_rle = _compressed(_native(_image(next(n), "RGB", 3, frames=3), _frames(rgb, 3)), RLELossless)
    cine_rle.FrameTimeVector = [0, 40, 60]
    cases.append(Case("rgb_multiframe_rle", cine_rle, _frames(rgb, 3)))

    # JPEG-LS (pyjpegls)
    cases.append(Case("rgb_jpegls_lossless", _compressed(_native(_image(next(n), "RGB", 3), [rgb]), JPEGLSLossless), [rgb]))
    jls16 = _compressed(_native(_image(next(n), "MONOCHROME2", 1, bits=16), [stored]), JPEGLSLossless)
    cases.append(Case("mono2_16bit_jpegls_lossless", jls16, [np.repeat(span[..., None], 3, -1)], 1))
    near = _compressed(_native(_image(next(n), "RGB", 3), [rgb]), JPEGLSNearLossless, jls_error=2)
    cases.append(Case("rgb_jpegls_near_lossless", near, [rgb], 2, 2.0))

    # JPEG 2000 (pylibjpeg-openjpeg)
    cases.append(Case("rgb_j2k_lossless", _compressed(_native(_image(next(n), "RGB", 3), [rgb]), JPEG2000Lossless), [rgb]))
    j2k_mono1 = _compressed(_native(_image(next(n), "MONOCHROME1", 1), [grey]), JPEG2000Lossless)
    cases.append(Case("mono1_j2k_lossless", j2k_mono1, [255 - grey3]))
    lossy = _compressed(_native(_image(next(n), "RGB", 3), [rgb]), JPEG2000, j2k_cr=[4])
    cases.append(Case("rgb_j2k_lossy", lossy, [rgb], 24, 3.0))

    # JPEG baseline (Pillow encodes, pydicom encapsulates)
    cases.append(Case("ybr_full_422_jpeg", _jpeg(_image(next(n), "YBR_FULL_422", 3), [rgb], subsampling=1), [rgb], 16, 3.0))
    cases.append(Case("ybr_full_jpeg", _jpeg(_image(next(n), "YBR_FULL", 3), [rgb], subsampling=0), [rgb], 12, 2.0))
    cases.append(Case("rgb_jpeg", _jpeg(_image(next(n), "RGB", 3), [rgb], subsampling=0, keep_rgb=True), [rgb], 12, 2.0))
    cases.append(Case("mono2_jpeg", _jpeg(_image(next(n), "MONOCHROME2", 1), [grey]), [grey3], 12, 2.0))
    cine_jpeg = _jpeg(_image(next(n), "YBR_FULL_422", 3, frames=2), _frames(rgb, 2), subsampling=1)
    cases.append(Case("ybr_full_422_multiframe_jpeg", cine_jpeg, _frames(rgb, 2), 16, 3.0))
    return cases


#: pydicom's bundled files for what no installed encoder writes
TEST_DATA_FILES = {
    "SC_rgb_jpeg_gdcm.dcm": "JPEG lossless SV1, RGB",
    "JPGExtended.dcm": "JPEG extended 12-bit, MONOCHROME2",
    "GDCMJ2K_TextGBR.dcm": "JPEG 2000 lossless, YBR_RCT",
    "examples_ybr_color.dcm": "JPEG baseline YBR_FULL_422, 30 frames",
    "SC_rgb_small_odd_big_endian.dcm": "explicit VR big endian, RGB",
    "MR_small_bigendian.dcm": "explicit VR big endian, MONOCHROME2 16-bit",
    "image_dfl.dcm": "deflated explicit VR little endian, MONOCHROME2",
    "examples_palette.dcm": "PALETTE COLOR 16-bit LUT",
    "SC_rgb_dcmtk_+eb+cy+np.dcm": "JPEG baseline YBR_FULL_422 (dcmtk)",
}


def pydicom_data_cases() -> list[Case]:
    cases = []
    for number, (name, what) in enumerate(sorted(TEST_DATA_FILES.items()), start=500):
        ds = pydicom.dcmread(get_testdata_file(name))
        expected = None
        if ds.SamplesPerPixel == 3:  # pydicom's own RGB decoding is the reference
            reference = ds.pixel_array
            expected = list(reference) if int(ds.get("NumberOfFrames", 1) or 1) > 1 else [reference]
            expected = [e.astype(np.uint8) for e in expected]
        for element in identified_dataset(number, sop_class=ds.SOPClassUID):
            if element.keyword != "SOPClassUID":
                ds[element.tag] = element
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        cases.append(Case(name.removesuffix(".dcm"), ds, expected, source=f"{name}: {what}"))
    return cases


def all_cases() -> list[Case]:
    return built_cases() + pydicom_data_cases()


def _write(case: Case, folder: Path) -> Path:
    path = folder / f"{PATIENT_FILE_NAME}_{case.name}.dcm"
    save(case.dataset, path)
    return path


# -- decoding every case ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cases():
    return all_cases()


def test_every_transfer_syntax_and_photometric_decodes_to_rgb(tmp_path, cases):
    uid_map = UidMap()
    covered = set()
    for case in cases:
        path = _write(case, tmp_path)
        covered.add((pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID.name, case.dataset.PhotometricInterpretation))
        records = list(iter_dicom_frames(path, uid_map))
        skips = [r for r in records if not r.ok]
        assert not skips, (case.name, skips)
        frames = [r for r in records if isinstance(r, DicomFrame)]
        count = int(case.dataset.get("NumberOfFrames", 1) or 1)
        assert len(frames) == count, case.name
        assert len({f.source for f in frames}) == 1 and frames[0].source.startswith("dicom:2.25.")
        for index, frame in enumerate(frames):
            assert frame.index == index and frame.frame_count == count
            assert frame.image.dtype == np.uint8 and frame.image.shape[-1] == 3 and frame.image.flags.c_contiguous
            assert frame.image.shape[:2] == (case.dataset.Rows, case.dataset.Columns), case.name
            if case.expected is None:
                assert frame.image.max() > frame.image.min(), case.name  # something visible
                continue
            error = np.abs(frame.image.astype(int) - case.expected[index].astype(int))
            assert error.max() <= case.max_error, (case.name, index, error.max())
            assert error.mean() <= case.mean_error + 1e-9, (case.name, index, error.mean())
            assert "PixelData" not in frame.dataset  # the header only travels with frames
    # the list: uncompressed, RLE, JPEG baseline and lossless, JPEG-LS, JPEG 2000
    syntaxes = {syntax for syntax, _ in covered}
    for must in (
        "Explicit VR Little Endian", "Implicit VR Little Endian", "RLE Lossless",
        "JPEG Baseline (Process 1)",
        "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
        "JPEG-LS Lossless Image Compression", "JPEG 2000 Image Compression (Lossless Only)",
        "JPEG 2000 Image Compression",
    ):
        assert must in syntaxes, must
    photometrics = {p for _, p in covered}
    assert {"RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR", "MONOCHROME1", "MONOCHROME2"} <= photometrics


def test_frame_timestamps(tmp_path, cases):
    by_name = {case.name: case for case in cases}
    fixed = list(iter_dicom_frames(_write(by_name["rgb_multiframe_explicit"], tmp_path), UidMap()))
    assert [f.timestamp_s for f in fixed] == pytest.approx([0.0, 0.04, 0.08, 0.12])
    vector = list(iter_dicom_frames(_write(by_name["rgb_multiframe_rle"], tmp_path), UidMap()))
    assert [f.timestamp_s for f in vector] == pytest.approx([0.0, 0.04, 0.1])
    single = list(iter_dicom_frames(_write(by_name["rgb_explicit"], tmp_path), UidMap()))
    assert single[0].timestamp_s == 0.0


def test_big_endian_16_bit_decodes_like_little_endian(tmp_path, cases):
    big = next(case for case in cases if case.name == "MR_small_bigendian")
    little = list(iter_dicom_frames(get_testdata_file("MR_small.dcm"), UidMap()))[0]
    decoded = list(iter_dicom_frames(_write(big, tmp_path), UidMap()))[0]
    assert np.array_equal(decoded.image, little.image)


# -- bad input -------------------------------------------------------------------------------


def _bad_files(folder: Path) -> dict[str, str]:
    """name -> expected kind; each is a real damaged file."""
    rgb = gradient_rgb(64, 64)
    with_pixels = identified_dataset(900)
    with_pixels.Rows, with_pixels.Columns = 64, 64
    with_pixels.SamplesPerPixel, with_pixels.PhotometricInterpretation = 3, "RGB"
    with_pixels.PlanarConfiguration = 0
    with_pixels.BitsAllocated = with_pixels.BitsStored = 8
    with_pixels.HighBit, with_pixels.PixelRepresentation = 7, 0
    with_pixels.PixelData = rgb.tobytes()
    save(with_pixels, folder / "whole.dcm")
    whole = (folder / "whole.dcm").read_bytes()
    (folder / "whole.dcm").unlink()

    (folder / "a_empty.dcm").write_bytes(b"")
    (folder / "b_notes.dcm").write_text("Qwertzuiop Janeska: burn of the left forearm\n" * 20)
    (folder / "c_truncated_pixels.dcm").write_bytes(whole[: len(whole) - 5000])
    (folder / "d_truncated_header.dcm").write_bytes(whole[:400])
    compressed = identified_dataset(901)
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration",
                    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PixelData"):
        setattr(compressed, keyword, getattr(with_pixels, keyword))
    compressed.compress(RLELossless, generate_instance_uid=False)
    buffer = io.BytesIO()
    compressed.save_as(buffer, enforce_file_format=True)
    rle_bytes = buffer.getvalue()
    (folder / "e_truncated_rle.dcm").write_bytes(rle_bytes[: len(rle_bytes) - 2000])
    save(identified_dataset(902), folder / "f_no_pixels.dcm")
    broken_jpeg = identified_dataset(903)
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration",
                    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
        setattr(broken_jpeg, keyword, getattr(with_pixels, keyword))
    broken_jpeg.PhotometricInterpretation = "YBR_FULL_422"
    broken_jpeg.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    broken_jpeg.PixelData = encapsulate([b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9"])
    broken_jpeg["PixelData"].VR = "OB"
    save(broken_jpeg, folder / "g_corrupt_jpeg.dcm")
    # a corrupt VR field: in the data set pydicom fails only when the value is first read (during
    # de-identification), in the file meta already while parsing the header
    high_bit = b"\x28\x00\x02\x01US"  # (0028,0102) High Bit, explicit VR little endian
    assert whole.count(high_bit) == 1
    (folder / "h_bad_vr_in_data_set.dcm").write_bytes(whole.replace(high_bit, b"\x28\x00\x02\x01QS"))
    syntax = b"\x02\x00\x10\x00UI"  # (0002,0010) Transfer Syntax UID
    assert whole.count(syntax) == 1
    (folder / "i_bad_vr_in_file_meta.dcm").write_bytes(whole.replace(syntax, b"\x02\x00\x10\x00Ua"))
    return {
        "a_empty.dcm": "empty",
        "b_notes.dcm": "not_dicom",
        "c_truncated_pixels.dcm": "truncated",
        "d_truncated_header.dcm": "truncated",
        "e_truncated_rle.dcm": "truncated",
        "f_no_pixels.dcm": "no_pixel_data",
        "g_corrupt_jpeg.dcm": "decode_error",
        "h_bad_vr_in_data_set.dcm": "unreadable",
        "i_bad_vr_in_file_meta.dcm": "unreadable",
    }


def test_bad_files_each_give_their_reason_and_the_run_goes_on(tmp_path, cases):
    expected = _bad_files(tmp_path)
    good = next(case for case in cases if case.name == "rgb_explicit")
    save(good.dataset, tmp_path / "z_good.dcm")  # sorted last: read after all the bad ones
    records = list(iter_dicom_frames(tmp_path, UidMap()))
    skips = [r for r in records if isinstance(r, DicomSkip)]
    assert [s.kind for s in skips] == list(expected.values()), [str(s) for s in skips]
    assert [s.file_number for s in skips] == list(range(1, len(expected) + 1))
    reasons = [s.reason for s in skips]
    assert len(set(reasons)) == len(reasons)  # each its own message
    assert "empty file" in reasons[0] and "not a DICOM file" in reasons[1]
    assert "PixelData needs" in reasons[2]
    assert "not an image" in reasons[5]
    assert "cannot decode" in reasons[6] and "JPEG Baseline" in reasons[6]
    assert "NotImplementedError" in reasons[7] and "NotImplementedError" in reasons[8]
    for skip in skips:
        assert skip.file_ref.startswith("path-sha256:")
        assert find_identifiers(str(skip)) == [] and find_identifiers(repr(skip)) == []
    frames = [r for r in records if isinstance(r, DicomFrame)]
    assert len(frames) == 1  # the good file after them still came through


# -- DICOMDIR, burned-in, privacy of everything ---------------------------------------------


def _file_set(folder: Path, cases: list[Case]) -> Path:
    file_set = FileSet()
    chosen = [c for c in cases if c.name in ("rgb_explicit", "mono2_8bit_explicit", "rgb_multiframe_rle")]
    for case in chosen:
        path = _write(case, folder)
        file_set.add(path)
    file_set.write(folder / "fileset")
    return folder / "fileset" / "DICOMDIR"


def test_dicomdir_is_followed_and_skipped_inside_a_folder(tmp_path, cases):
    dicomdir = _file_set(tmp_path, cases)
    assert find_identifiers(dicomdir.read_bytes())  # the index itself names the patient
    records = list(iter_dicom_frames(dicomdir, UidMap()))
    frames = [r for r in records if r.ok]
    assert len(frames) == 1 + 1 + 3 and not [r for r in records if not r.ok]
    walked = list(iter_dicom_frames(dicomdir.parent, UidMap()))
    assert [r.kind for r in walked if not r.ok] == ["dicomdir"]
    assert len([r for r in walked if r.ok]) == 5


def test_burned_in_refused_unless_overridden_with_audit(tmp_path):
    burned = _native(_image(950, "RGB", 3), [gradient_rgb()])
    burned.BurnedInAnnotation = "YES"
    path = tmp_path / "burned.dcm"
    save(burned, path)
    audit = AuditLog(tmp_path / "audit.jsonl")
    refused = list(iter_dicom_frames(path, UidMap(), audit=audit))
    assert [r.kind for r in refused] == ["burned_in"] and "Burned In Annotation" in refused[0].reason
    accepted = list(iter_dicom_frames(path, UidMap(), audit=audit, allow_burned_in=True))
    assert len(accepted) == 1 and accepted[0].ok
    actions = [json.loads(line)["action"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert actions == ["refuse_burned_in", "override_burned_in", "read"]
    with pytest.raises(ValueError, match="audit"):
        list(iter_dicom_frames(path, UidMap(), allow_burned_in=True))  # override off the record


def test_no_identifier_reaches_any_output(tmp_path, cases, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    inputs = tmp_path / PATIENT_FILE_NAME
    inputs.mkdir()
    for case in cases:
        _write(case, inputs)
    _bad_files(inputs)
    _file_set(inputs, cases)
    assert find_identifiers((inputs / f"{PATIENT_FILE_NAME}_rgb_explicit.dcm").read_bytes())  # they are in there

    audit_path = tmp_path / "audit.jsonl"
    audit = AuditLog(audit_path)
    outputs: list[str | bytes] = []
    datasets_seen = {}
    for record in iter_dicom_frames(inputs, UidMap(), audit=audit):
        outputs.append(repr(record))
        outputs.append(str(record))
        if record.ok:
            outputs.append(record.source)
            if id(record.dataset) not in datasets_seen:
                datasets_seen[id(record.dataset)] = record.dataset
                outputs.append(str(record.dataset))
                outputs.append(dataset_bytes(record.dataset))
            assert record.dataset.PatientIdentityRemoved == "YES"
    assert len(datasets_seen) >= len(cases)
    outputs.append(audit_path.read_bytes())
    outputs.append("\n".join(r.getMessage() for r in caplog.records))
    # pydicom did complain (the truncated RLE file), and its words reached the log redacted
    assert any("End of file reached" in r.getMessage() for r in caplog.records)
    captured = capsys.readouterr()
    outputs.append(captured.out + captured.err)
    for blob in outputs:
        assert find_identifiers(blob) == [], find_identifiers(blob)
    assert verify(audit_path) == (True, [])
    entries = [json.loads(line) for line in audit_path.read_text().splitlines()]
    assert {e["action"] for e in entries} == {"read"}
    assert all(e["object"]["file"].startswith("path-sha256:") for e in entries)


def test_an_impossible_frame_count_is_refused_before_allocation(tmp_path):
    """NumberOfFrames = 2^31 on a small image: refused by name, nothing allocated for it, and the
    good file beside it is still read."""
    from holoburn.clinical.dicom import DicomSkip

    good = with_rgb_pixels(identified_dataset(1), gradient_rgb(32, 48))
    huge = with_rgb_pixels(identified_dataset(2), gradient_rgb(32, 48))
    huge.NumberOfFrames = 2**31
    save(good, tmp_path / "good.dcm")
    save(huge, tmp_path / "huge.dcm")
    records = list(iter_dicom_frames(tmp_path, UidMap(), AuditLog(tmp_path / "audit.jsonl")))
    skips = [r for r in records if isinstance(r, DicomSkip)]
    assert len(skips) == 1 and skips[0].kind == "implausible_size" and "2147483648" in skips[0].reason
    assert sum(1 for r in records if not isinstance(r, DicomSkip)) == 1
