"""End to end on the CPU: real Holoscan graphs over real video files, with a real ONNX model."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import write_video


def holoburn(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "holoburn.app", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def count_frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def test_run_writes_the_output_contract(tmp_path, tiny_card, red_green_video):
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{red_green_video}", "--model", tiny_card, "--out", out,
                      "--save-masks", out / "masks", "--body-region", "left_arm")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(12))
    for key in ("source", "frame", "timestamp_s", "lane", "backend", "status", "pixels", "burn_share_of_skin",
                "tbsa_pct", "triage", "latency_ms"):
        assert key in lines[0], key
    assert all(r["status"] == "ok" and r["backend"] == "onnxruntime" for r in lines)
    assert lines[1]["timestamp_s"] == pytest.approx(1 / 30, abs=1e-3)
    # the tiny model calls red full thickness and green healthy skin: half the skin is burned
    assert lines[0]["burn_share_of_skin"] == pytest.approx(0.5, abs=0.05)
    assert lines[0]["tbsa_pct"] == pytest.approx(9.0 * 0.5, abs=0.5)
    assert lines[0]["triage"]["level"] == "refer"
    # full thickness escalates the source to the emergency lane from the next frame on
    assert lines[0]["lane"] == "ROUTINE" and lines[-1]["lane"] == "EMERGENCY"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_in"] == 12 == summary["processed"] and summary["dropped"] == {}
    assert summary["lane_changes"][0]["to"] == "EMERGENCY"
    assert count_frames(out / "overlay.mp4") == 12
    masks = sorted((out / "masks").glob("*.png"))
    assert [m.name for m in masks] == [f"{i:06d}.png" for i in range(12)]
    mask = cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (120, 160) and mask.dtype == np.uint8
    assert (mask[:, :70] == 5).mean() > 0.95 and (mask[:, 90:] == 1).mean() > 0.95
    assert "frames in" in result.stdout and str(out / "results.jsonl") in result.stdout


def test_lane_given_with_the_source(tmp_path, tiny_card, red_green_video):
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{red_green_video}@URGENT", "--model", tiny_card, "--out", out,
                      "--max-frames", 1)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "results.jsonl").read_text().splitlines()[0])["lane"] == "URGENT"


def test_max_frames_and_another_codec(tmp_path, tiny_card):
    frames = [np.random.default_rng(i).integers(0, 255, (72, 130, 3), dtype=np.uint8) for i in range(8)]
    video = write_video(tmp_path / "clip.avi", frames, fourcc="MJPG")
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{video}", "--model", tiny_card, "--out", out, "--max-frames", 5)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_in"] == 5 == summary["processed"]
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    ok, first = cap.read()
    assert ok and first.shape[:2] == (72, 130)


def test_overlay_writer_pads_odd_sizes(tmp_path):
    from holoburn.media.video import VideoWriter

    writer = VideoWriter(tmp_path / "odd.mp4", fps=10)
    frame = np.random.default_rng(0).integers(0, 255, (73, 131, 3), dtype=np.uint8)
    for _ in range(3):
        writer.write(frame)
    writer.close()
    # MPEG-4 4:2:0 needs even sizes: odd sides gain one replicated row/column, nothing is cut
    assert writer.size == (132, 74) and count_frames(tmp_path / "odd.mp4") == 3


@pytest.mark.parametrize("case", ["missing", "not_video", "empty", "bad_kind"])
def test_bad_input_gives_a_clear_error(tmp_path, tiny_card, case):
    target = tmp_path / "input.mp4"
    if case == "not_video":
        target.write_text("this is a text file, not a video\n" * 20)
    elif case == "empty":
        target.write_bytes(b"")
    source = f"webcam:{target}" if case == "bad_kind" else f"video:{target}"
    result = holoburn("run", "--source", source, "--model", tiny_card, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr
    if case != "bad_kind":
        assert str(target) in result.stderr
    expected = {"missing": "not found", "not_video": "video", "empty": "empty", "bad_kind": "not supported"}[case]
    assert expected in result.stderr


def test_model_that_does_not_match_its_card_fails_at_start(tmp_path, red_green_video):
    from conftest import tiny_onnx, write_card

    tiny_onnx(tmp_path / "four.onnx", out_channels=4)
    card = write_card(tmp_path, "four.onnx", model_id="four")
    result = holoburn("run", "--source", f"video:{red_green_video}", "--model", card, "--out", tmp_path / "out")
    assert result.returncode == 2 and "6 classes" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "results.jsonl").exists()
