"""What a user can get wrong fails with a declared error (clinical/errors.py), never a bare
ValueError, FileNotFoundError or KeyError: the command line catches only declared errors, so a
builtin one would be a traceback. Real bad files, written here."""
from __future__ import annotations

import argparse

import pytest

from holoburn.clinical.errors import BadConfig, BadInput, HoloburnError
from test_pipeline import holoburn

BUILTIN = (ValueError, FileNotFoundError, KeyError, OSError)


def declared(raised: pytest.ExceptionInfo, kind: type = BadInput) -> str:
    """The message of a declared error of `kind` that no builtin `except` would catch."""
    error = raised.value
    assert isinstance(error, kind) and isinstance(error, HoloburnError), type(error).__mro__
    assert not isinstance(error, BUILTIN), f"{type(error).__name__} is still a builtin error: {type(error).__mro__}"
    return str(error)


# -- video and sources ------------------------------------------------------------------------


def test_a_missing_video(tmp_path):
    from holoburn.media.video import VideoError, VideoReader

    path = tmp_path / "nowhere.mp4"
    with pytest.raises(VideoError) as raised:
        VideoReader(path)
    assert str(path) in declared(raised) and "not found" in str(raised.value)


def test_a_text_file_given_as_video(tmp_path):
    from holoburn.app.run.sources import open_reader
    from holoburn.media.video import VideoError

    path = tmp_path / "notes.mp4"
    path.write_text("seen at 10:00, burn of the left forearm\n" * 10)
    with pytest.raises(VideoError) as raised:
        open_reader(f"video:{path}", {})
    assert str(path) in declared(raised) and "text file" in str(raised.value)


def test_a_video_that_vanishes_before_a_reopen(tmp_path, red_green_video):
    import shutil

    from holoburn.media.video import VideoError, VideoReader

    path = tmp_path / "loop.mp4"
    shutil.copy(red_green_video, path)
    reader = VideoReader(path)
    path.unlink()
    with pytest.raises(VideoError) as raised:  # what a looping source meets between passes
        reader.reopen()
    assert str(path) in declared(raised)


@pytest.mark.parametrize("spec, words", [("webcam:burns.mp4", "is not supported"), ("burns.mp4", "KIND:LOCATION")])
def test_an_unknown_source_kind(spec, words):
    from holoburn.app.run.sources import parse_source

    with pytest.raises(BadInput) as raised:
        parse_source(spec)
    message = declared(raised)
    assert spec in message and words in message


def test_a_missing_or_empty_holoscan_recording(tmp_path):
    from holoburn.app.run.sources import gxf_recording

    with pytest.raises(BadInput) as raised:
        gxf_recording(str(tmp_path / "clip"))
    assert str(tmp_path / "clip.gxf_entities") in declared(raised)
    (tmp_path / "clip.gxf_entities").write_bytes(b"")
    (tmp_path / "clip.gxf_index").write_bytes(b"x")
    with pytest.raises(BadInput) as raised:
        gxf_recording(str(tmp_path / "clip"))
    assert "clip.gxf_entities is empty" in declared(raised)


def test_a_camera_that_is_not_there():
    from holoburn.media.camera import CameraError, CameraReader

    with pytest.raises(CameraError) as raised:
        CameraReader("/dev/video97", open_capture=lambda *a: None)
    assert "/dev/video97" in declared(raised)


def test_a_camera_pixel_format_that_does_not_exist():
    from holoburn.media.camera import open_opencv_capture

    with pytest.raises(BadConfig) as raised:
        open_opencv_capture("/dev/video97", 640, 480, 30.0, "RGB3")
    assert "camera.pixel_format" in declared(raised, BadConfig)


# -- config files ------------------------------------------------------------------------------


def test_a_config_with_an_unknown_key(tmp_path):
    from holoburn.app.config import load_config

    path = tmp_path / "site.yaml"
    path.write_text("source:\n  lane: URGENT\n  colour: red\n")
    with pytest.raises(BadConfig) as raised:
        load_config(path)
    message = declared(raised, BadConfig)
    assert str(path) in message and "source.colour: unknown key" in message


BAD_CONFIG_FILES = {
    # case: (bytes, what the message says)
    "latin-1": ("source:\n  body_region: h\xe9ad\n".encode("latin-1"), "not UTF-8"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "binary"),
    "not-a-mapping": (b"- source\n- camera\n", "mapping of sections"),
    "not-yaml": (b"source: [unclosed\n", "not valid YAML"),
}


@pytest.mark.parametrize("case", BAD_CONFIG_FILES)
def test_a_config_file_that_is_not_a_yaml_mapping(tmp_path, case):
    from holoburn.app.config import load_config

    data, words = BAD_CONFIG_FILES[case]
    path = tmp_path / "site.yaml"
    path.write_bytes(data)
    with pytest.raises(BadConfig) as raised:
        load_config(path)
    message = declared(raised, BadConfig)
    assert str(path) in message and words in message


@pytest.mark.parametrize("case", ["missing", "folder", "latin-1", "binary"])
def test_config_check_names_a_file_it_cannot_read(tmp_path, case):
    from holoburn.app.config_check import run_config

    path = tmp_path / "site.yaml"
    if case == "folder":
        path.mkdir()
    elif case != "missing":
        path.write_bytes(BAD_CONFIG_FILES[case][0])
    with pytest.raises(BadConfig) as raised:
        run_config(argparse.Namespace(file=str(path)))
    assert str(path) in declared(raised, BadConfig)


def test_a_non_utf8_config_through_the_command_exits_2_without_a_traceback(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_bytes(BAD_CONFIG_FILES["latin-1"][0])
    result = holoburn("config", "check", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(path) in result.stderr and "not UTF-8" in result.stderr


# -- DICOM -----------------------------------------------------------------------------------
# DICOM messages name a file by path_ref() (a hash), never by its path: paths hold patient names.


def _damaged_dicom(tmp_path):
    from test_deid import gradient_rgb, identified_dataset, save, with_rgb_pixels

    path = tmp_path / "Qwertzuiop_Janeska.dcm"
    save(with_rgb_pixels(identified_dataset(1), gradient_rgb()), path)
    data = path.read_bytes()
    syntax = b"\x02\x00\x10\x00UI"  # (0002,0010) Transfer Syntax UID: its VR field corrupted
    path.write_bytes(data.replace(syntax, b"\x02\x00\x10\x00Ua"))
    return path


def test_a_damaged_dicom_file(tmp_path):
    pytest.importorskip("pydicom")
    from holoburn.clinical.audit import path_ref
    from holoburn.clinical.deid import DicomInputError, UidMap, read_dicom
    from holoburn.clinical.dicom import DicomSkip, iter_dicom_frames

    path = _damaged_dicom(tmp_path)
    with pytest.raises(DicomInputError) as raised:
        read_dicom(path)
    message = declared(raised)
    assert raised.value.kind == "unreadable" and "cannot parse the DICOM header" in message
    assert str(path) not in message and "Qwertzuiop" not in message
    [skip] = list(iter_dicom_frames(path, UidMap()))  # in a run: reported by its reference, and skipped
    assert isinstance(skip, DicomSkip) and skip.kind == "unreadable" and path_ref(path) in str(skip)


def test_a_missing_dicom_source(tmp_path):
    pytest.importorskip("pydicom")
    from holoburn.clinical.audit import path_ref
    from holoburn.clinical.deid import UidMap
    from holoburn.clinical.dicom import iter_dicom_frames

    path = tmp_path / "Qwertzuiop_Janeska"
    with pytest.raises(BadInput) as raised:
        list(iter_dicom_frames(path, UidMap()))
    message = declared(raised)
    assert path_ref(path) in message and "Qwertzuiop" not in message


def test_an_audit_log_that_cannot_be_written(tmp_path):
    from holoburn.clinical.audit import AuditLog

    folder = tmp_path / "audit.jsonl"
    folder.mkdir()  # a folder where the log should be
    with pytest.raises(BadInput) as raised:
        AuditLog(folder).append("read", {"file": "path-sha256:0"})
    assert str(folder) in declared(raised)
