"""Frames travel between operators (and fragments) as tensor maps: pixels as a tensor, the
frame's record as a small tensor of JSON bytes; nothing in them is a Python object to pickle."""
from __future__ import annotations

import numpy as np

from holoburn.processing.frame import (
    IMAGE,
    Frame,
    frame_from_message,
    frame_from_result,
    frame_message,
    result_message,
)


def test_a_source_frame_round_trips_as_tensors():
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    frame = Frame.of("dicom:3f2a", 7, 0.25, image, source_fps=30.0,
                     origin={"dicom_source": "2.25.1", "frame_in_file": 2, "PatientName": "never travels"})
    message = frame_message(frame)
    assert all(isinstance(v, np.ndarray) and v.flags.writeable for v in message.values())
    again = frame_from_message(message)
    assert again.info == frame.info and dict(again.info.origin) == {"dicom_source": "2.25.1", "frame_in_file": 2}
    assert np.shares_memory(again.image, image)  # the pixels are not copied


def test_a_frame_without_a_picture_keeps_its_reason():
    message = frame_message(Frame.of("camera:/dev/video0", 3, 0.1, None, status="no_signal"))
    assert IMAGE not in message
    again = frame_from_message(message)
    assert again.status == "no_signal" and again.image is None and not again.ok


def test_a_finished_frame_round_trips_for_a_results_writer_elsewhere():
    frame = Frame.of("video:a.mp4", 1, 0.03, np.zeros((4, 5, 3), np.uint8))
    frame.lane, frame.findings, frame.stage_ms = "EMERGENCY", {"triage": {"level": "refer"}}, {"sink": 1.5}
    frame.mask, frame.overlay = np.ones((4, 5), np.uint8), np.full((4, 5, 3), 9, np.uint8)
    message = result_message(frame, {"backend": "onnxruntime", "precision": "fp32"})
    assert all(isinstance(v, np.ndarray) for v in message.values())
    again = frame_from_result(message)
    assert again.info == frame.info and again.lane == "EMERGENCY" and again.findings == frame.findings
    assert np.array_equal(again.mask, frame.mask) and np.array_equal(again.overlay, frame.overlay)
    assert again.extra["backend"]["precision"] == "fp32"
