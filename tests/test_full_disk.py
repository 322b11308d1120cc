"""A full disk, for real: the run goes on in a process whose files cannot grow past a limit
(RLIMIT_FSIZE, with SIGXFSZ ignored so that a write fails with EFBIG, as ENOSPC on a full disk;
no root, no tmpfs). It must stop with a named error, leave results.jsonl without a partial line,
its overlay closed and playable with a picture for every processed record, and summary.json
saying what was not written."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import write_video
from test_pipeline import count_frames


def limited(limit_bytes: int):
    """preexec_fn: files of the child cannot grow past `limit_bytes`; writing past it fails (EFBIG)."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


def run_limited(limit_bytes: int, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limited(limit_bytes))


@pytest.fixture(scope="module")
def noisy_video(tmp_path_factory):
    """60 frames of noise, 160x120: its overlay (about 8 kB a frame) outgrows a 400 kB limit."""
    rng = np.random.default_rng(11)
    frames = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(60)]
    return write_video(tmp_path_factory.mktemp("noisy") / "noisy.mp4", frames)


def check_stopped_whole(result, out, overlays: dict) -> dict:
    """The run stopped named and whole; returns its summary. overlays: source id -> overlay file."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "At:" not in result.stderr, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"holoburn run: error: the run stopped: no room left to write in {out} (")
    assert "the file-size limit (ulimit -f) is reached" in message and "0 not written" in message

    text = (out / "results.jsonl").read_text()
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]  # every line whole
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "output_full" and summary["output_full"]["frames_not_written"] == 0
    assert summary["frames_in"] == len(records) == summary["processed"] + sum(summary["dropped"].values())
    assert summary["output_full"]["frames_without_pictures"] == summary["dropped"].get("output_full", 0) > 0
    assert summary["write_errors"] == []
    for sid, overlay in overlays.items():
        mine = [r for r in records if r["source"] == sid]
        assert [r["frame"] for r in mine] == list(range(len(mine)))  # in order, none twice, no gap
        processed = sum(r["status"] == "ok" for r in mine)
        assert processed > 0 and count_frames(out / overlay) == processed == summary["sources"][sid]["overlay_frames"]
    return summary


def test_a_full_disk_stops_the_run_with_every_written_frame_whole(tmp_path, tiny_card, noisy_video):
    out = tmp_path / "out"
    result = run_limited(400_000, "-m", "holoburn.app", "run", "--source", f"video:{noisy_video}",
                         "--model", tiny_card, "--out", out)
    summary = check_stopped_whole(result, out, {"video:1": "overlay.mp4"})
    assert summary["frames_in"] < 60  # it did stop early
    assert os.path.getsize(out / "overlay.mp4") < 400_000


def test_a_full_disk_with_two_sources_and_picture_threads(tmp_path, tiny_card, noisy_video):
    """Several sources write their pictures from threads, queued: the room kept covers the queue."""
    second = tmp_path / "second.mp4"
    second.write_bytes(noisy_video.read_bytes())
    out = tmp_path / "out"
    result = run_limited(400_000, "-m", "holoburn.app", "run", "--source", f"video:{noisy_video}",
                         "--source", f"video:{second}@URGENT", "--model", tiny_card, "--out", out)
    check_stopped_whole(result, out, {"video:1": "overlay_video_1.mp4", "video:2": "overlay_video_2.mp4"})


LINES = """
import json, sys
from holoburn.processing.files import LineFile, OutputFull, file_room, write_json
path = sys.argv[1]
lines = LineFile(path)
room = file_room(path)
written = 0
try:
    while True:
        lines.write_line(json.dumps({"frame": written, "pad": "x" * 290}))
        written += 1
except OutputFull as exc:
    print(json.dumps({"written": written, "room": room, "error": str(exc)}))
try:
    write_json(path + ".summary.json", {"values": list(range(1000))})
except OutputFull as exc:
    print(json.dumps({"summary_error": str(exc)}))
"""


def test_a_results_line_that_does_not_fit_is_taken_back(tmp_path):
    path = tmp_path / "results.jsonl"
    result = run_limited(1000, "-c", LINES, path)
    assert result.returncode == 0, result.stderr
    told, summary = (json.loads(line) for line in result.stdout.splitlines())
    assert told["room"] == 1000 and told["written"] == 3  # 314-byte lines: the fourth is cut at 1000, taken back
    assert str(path) in told["error"] and "too large" in told["error"]
    text = path.read_text()
    assert len(text) == 3 * 314 and [json.loads(l)["frame"] for l in text.splitlines()] == [0, 1, 2]
    assert str(path) + ".summary.json" in summary["summary_error"]
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "results.jsonl.summary.json").exists()


def test_an_overlay_that_does_not_read_back_is_a_write_error(tmp_path):
    """OpenCV's writer fails silently: the recorder reads each overlay back when it closes it."""
    from holoburn.processing.recorder import RunRecorder, SourceOutput

    recorder = RunRecorder(tmp_path, [SourceOutput("video:1", 30.0, (48, 64))], picture_threads=False)
    recorder.writers["video:1"].write(np.zeros((48, 64, 3), np.uint8))
    recorder.writers["video:1"]._writer.release()  # as if its disk had filled: no index written ...
    (tmp_path / "overlay.mp4").write_bytes(b"")  # ... and its bytes lost
    recorder.close()
    assert recorder.write_errors == ["video:1: overlay.mp4 reads back 0 of the 1 frames written to it"]
    assert cv2.VideoCapture(str(tmp_path / "overlay.mp4")).isOpened() is False


def frames(count: int, size=(48, 64)):
    """Processed frames as the lanes hand them to the writer: an overlay each, done now."""
    import time

    from holoburn.processing.frame import Frame

    for index in range(count):
        frame = Frame.of("video:1", index, index / 30)
        frame.overlay = np.full((*size, 3), 10 * index, np.uint8)
        yield frame, time.monotonic_ns()


def test_a_disk_that_fills_during_the_run_stops_the_pictures_not_the_records(tmp_path, monkeypatch):
    """The disk-space side, which a file-size limit does not reach: another program fills the disk."""
    from holoburn.processing import recorder as recording

    free = {"bytes": 1 << 30}
    monkeypatch.setattr(recording, "disk_free", lambda folder: free["bytes"])
    recorder = recording.RunRecorder(tmp_path, [recording.SourceOutput("video:1", 30.0, (48, 64))],
                                     picture_threads=False)
    for frame, done_ns in frames(6):
        if frame.index == 3:
            free["bytes"] = recording.HEADROOM + recording.OVERLAY_BUFFER  # short of a picture
        recorder.add(frame, done_ns)
    recorder.close()
    assert str(recorder.full).startswith(f"the disk holding {tmp_path} is full")
    statuses = [json.loads(line)["status"] for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert statuses == ["ok"] * 3 + ["output_full"] * 3
    assert count_frames(tmp_path / "overlay.mp4") == 3 and recorder.write_errors == []
    assert recorder.ledger.frames_in == 6 and recorder.not_written == 0


def test_a_results_line_that_fails_stops_every_write(tmp_path, monkeypatch):
    """A line the disk refuses outright (the room check passed, then the disk filled)."""
    from holoburn.processing import recorder as recording
    from holoburn.processing.files import LineFile, OutputFull

    written = []

    def write_line(self, text):
        if len(written) == 2:
            raise OutputFull(f"cannot write {self.path}: No space left on device")
        written.append(text)

    monkeypatch.setattr(LineFile, "write_line", write_line)
    recorder = recording.RunRecorder(tmp_path, [recording.SourceOutput("video:1", 30.0, (48, 64))],
                                     picture_threads=False)
    for frame, done_ns in frames(5):
        recorder.add(frame, done_ns)
    recorder.close()
    assert "No space left on device" in str(recorder.full)
    assert len(written) == recorder.ledger.frames_in == recorder.ledger.processed == 2
    assert recorder.not_written == 3 and count_frames(tmp_path / "overlay.mp4") == 2
