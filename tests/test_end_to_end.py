"""The shipped model through the real graph on freshly generated burn video (seeds never used
in training), and the demo a user runs first."""
from __future__ import annotations

import json

import cv2
import numpy as np

from holoburn.clinical.metrics import any_burn_dice, confusion_matrix, dice_per_class
from test_pipeline import count_frames, holoburn

FRAMES = 24


def test_run_on_generated_burn_video_meets_the_quality_bar(tmp_path):
    data = tmp_path / "data"
    made = holoburn("synth", "--out", data, "--frames", FRAMES, "--seed", 3000001, "--size", "480x360")
    assert made.returncode == 0, made.stderr
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{data / 'frames.mp4'}", "--out", out, "--save-masks", out / "masks")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert [l["frame"] for l in lines] == list(range(FRAMES)) and all(l["status"] == "ok" for l in lines)
    assert count_frames(out / "overlay.mp4") == FRAMES
    confusion = sum(
        confusion_matrix(cv2.imread(str(data / "masks" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED),
                         cv2.imread(str(out / "masks" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED))
        for i in range(FRAMES))
    dice = any_burn_dice(confusion)
    depths = dice_per_class(confusion)[2:]
    print(f"\nany-burn Dice {dice:.4f}; depth Dice {np.round(depths, 4).tolist()}")
    assert dice >= 0.90
    assert np.nanmean(depths) >= 0.75


def test_demo_replays_the_bundled_sample(tmp_path):
    result = holoburn("demo", "--out", tmp_path / "demo")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["frames_in"] == summary["processed"] == 90 and summary["model_id"] == "burn_unet_v2"
    assert summary["backend"] == "onnxruntime"
    assert "frames in" in result.stdout and "decision support" in result.stdout
    assert "frames:" in result.stderr  # progress shown
