"""Sources other than plain video files: Holoscan recordings, a camera behind a fake device."""
from __future__ import annotations

import json

import numpy as np
import pytest

from test_pipeline import holoburn


def records(path):
    from conftest import timing_free

    return timing_free(path, also=("source", "timestamp_s"))  # a recording names its source anew


def test_gxf_recording_round_trip(tmp_path, tiny_card, red_green_video):
    # a run that records its input as a Holoscan recording, then a run that replays it
    first = holoburn("run", "--source", f"video:{red_green_video}", "--model", tiny_card, "--out", tmp_path / "a",
                     "--record-gxf", tmp_path / "rec" / "clip")
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "rec" / "clip.gxf_entities").stat().st_size > 0
    replay = holoburn("run", "--source", f"gxf:{tmp_path / 'rec' / 'clip'}", "--model", tiny_card, "--out", tmp_path / "b")
    assert replay.returncode == 0, replay.stderr
    assert records(tmp_path / "b" / "results.jsonl") == records(tmp_path / "a" / "results.jsonl")
    lines = [json.loads(l) for l in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    assert lines[0]["source"] == "gxf:1" and lines[3]["timestamp_s"] == pytest.approx(0.1)


def test_convert_video_to_recording(tmp_path, tiny_card, red_green_video):
    result = holoburn("convert", f"video:{red_green_video}", tmp_path / "conv" / "clip", "--max-frames", 7)
    assert result.returncode == 0, result.stderr
    assert "wrote 7 frames" in result.stdout
    run = holoburn("run", "--source", f"gxf:{tmp_path / 'conv' / 'clip'}", "--model", tiny_card, "--out", tmp_path / "o")
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["processed"] == 7


def test_missing_recording_is_a_clear_error(tmp_path, tiny_card):
    result = holoburn("run", "--source", f"gxf:{tmp_path / 'nothing'}", "--model", tiny_card, "--out", tmp_path / "o")
    assert result.returncode == 2 and "nothing.gxf_entities not found" in result.stderr
    assert "Traceback" not in result.stderr


class FakeCapture:
    """A V4L2 device as OpenCV shows it: frames until it is unplugged."""

    def __init__(self, frames: int, value: int):
        self.left, self.value = frames, value

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.full((48, 64, 3), self.value, np.uint8)

    def release(self):
        pass


def test_camera_loss_and_reconnect_with_backoff():
    from holoburn.media.camera import Backoff, CameraReader

    clock = {"t": 0.0}
    attempts = []
    devices = iter([FakeCapture(3, 10), None, None, FakeCapture(2, 20)])  # plugged, gone twice, back

    def open_capture(*args):
        attempts.append(clock["t"])
        return next(devices)

    def sleep(s):
        clock["t"] += s

    reader = CameraReader("/dev/video9", fps=10.0, backoff=Backoff(0.5, 4.0), open_capture=open_capture,
                          clock=lambda: clock["t"], sleep=sleep)
    statuses = []
    for _ in range(40):
        image, ts, status = reader.next_frame()
        statuses.append(status)
        if status == "ok" and image[0, 0, 0] == 20 and statuses.count("ok") == 5:
            break
    assert statuses[:3] == ["ok"] * 3 and statuses[3] == "no_signal"
    assert statuses.count("ok") == 5 and reader.reconnects == 1
    # retries after 0.5 s, then 1.0 s and 2.0 s more (doubling back-off); back at 3.5 s
    assert attempts[1] == pytest.approx(0.5, abs=0.11) and attempts[2] - attempts[1] == pytest.approx(1.0, abs=0.11)
    assert attempts[3] - attempts[2] == pytest.approx(2.0, abs=0.11)
    gap = reader.gaps[0]
    assert gap["frames_lost"] == pytest.approx(35, abs=1) and reader.no_signal_frames == statuses.count("no_signal")


def test_camera_that_cannot_open_is_a_clear_error():
    from holoburn.media.camera import CameraReader

    from holoburn.clinical.errors import BadInput
    from holoburn.media.camera import CameraError

    with pytest.raises(CameraError, match="camera /dev/video42 not found: no such device") as missing:
        CameraReader("/dev/video42", open_capture=lambda *a: None)
    assert isinstance(missing.value, BadInput)
    with pytest.raises(CameraError, match="camera /dev/null cannot be opened"):  # there, but no camera
        CameraReader("/dev/null", open_capture=lambda *a: None)


def test_camera_source_in_a_real_graph_shows_no_signal(tmp_path, tiny_card, monkeypatch):
    """The graph keeps running through a camera gap: NO SIGNAL frames are counted and recorded."""
    from holoburn.app.config import load_config
    from holoburn.app.run.replay import replay
    from holoburn.media.camera import Backoff, CameraReader

    devices = iter([FakeCapture(4, 200), FakeCapture(3, 90)])  # unplugged after 4 frames, back, gone
    clock = {"t": 0.0}

    def sleep(s):
        clock["t"] += s

    reader = CameraReader("/dev/video0", fps=20.0, backoff=Backoff(0.2, 1.0), open_capture=lambda *a: next(devices, None),
                          clock=lambda: clock["t"], sleep=sleep)
    config = load_config(None, {"source.location": "camera:/dev/video0", "source.max_frames": 14,
                                "inference.model": str(tiny_card)})
    summary = replay(config, ["camera:/dev/video0"], tmp_path / "out", readers={"camera:/dev/video0": reader})
    assert summary["frames_in"] == 14 and summary["processed"] == 7  # 4 before the gap, 3 after
    assert summary["dropped"] == {"no_signal": 7}
    assert summary["overlay_frames"] == 14 and summary["overlay_no_signal_frames"] == 7
    lines = [json.loads(l) for l in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [l["status"] for l in lines[:5]] == ["ok"] * 4 + ["no_signal"] and lines[-1]["status"] == "no_signal"
