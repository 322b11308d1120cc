"""`holoburn validate` end to end: the same graph as `run`, scored against ground-truth masks."""
from __future__ import annotations

import json

import cv2
import numpy as np

from test_pipeline import holoburn


def write_truth(directory, indices, left_class=5):
    directory.mkdir(parents=True, exist_ok=True)
    mask = np.ones((120, 160), np.uint8)
    mask[:, :80] = left_class
    for i in indices:
        cv2.imwrite(str(directory / f"{i:06d}.png"), mask)
    return directory


def test_validate_scores_reports_and_accounts_for_missing_truth(tmp_path, tiny_card, red_green_video):
    # truth for frames 0..9 and a stray 20; the video has 12 frames (10 and 11 lack truth)
    truth = write_truth(tmp_path / "gt", [*range(10), 20])
    out = tmp_path / "val"
    result = holoburn("validate", "--source", f"video:{red_green_video}", "--masks", truth, "--model", tiny_card,
                      "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"]["evaluated"] == 10
    assert metrics["frames"]["missing_truth"] == [10, 11] and metrics["frames"]["extra_truth"] == [20]
    any_burn = metrics["pixel_pooled"]["any_burn"]
    # the tiny model calls red full thickness, exactly the truth's left half (up to codec edges)
    assert any_burn["dice"] > 0.97 and any_burn["auc"] > 0.97
    assert metrics["run"]["backend"] == "onnxruntime" and metrics["command"].startswith("holoburn validate")
    assert "WARNING: 2 frames without ground truth" in result.stdout
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "decision support" in html.lower()
    # the same graph as run: results and overlay are there too
    assert len((out / "results.jsonl").read_text().splitlines()) == 12 and (out / "overlay.mp4").exists()


def test_baseline_drop_fails_the_run(tmp_path, tiny_card, red_green_video):
    good = tmp_path / "good"
    assert holoburn("validate", "--source", f"video:{red_green_video}", "--masks", write_truth(tmp_path / "gt", range(12)),
                    "--model", tiny_card, "--out", good, "--no-auc").returncode == 0
    # truth now says deep partial where the model says full thickness: depth Dice collapses
    worse = holoburn("validate", "--source", f"video:{red_green_video}", "--masks",
                     write_truth(tmp_path / "gt4", range(12), left_class=4), "--model", tiny_card,
                     "--out", tmp_path / "worse", "--no-auc", "--baseline", good / "metrics.json")
    assert worse.returncode == 1, worse.stderr
    assert "DRIFT" in worse.stdout
    metrics = json.loads((tmp_path / "worse" / "metrics.json").read_text())
    assert metrics["baseline"]["drops"]


def test_validate_measures_the_masks_run_gives(tmp_path):
    """One graph: `validate` scores exactly the masks `run` produces on the same video (the shipped
    model on the bundled sample, whose depth boundaries make any difference in resampling or
    threading show)."""
    from holoburn.app.run.command import sample_video

    video = sample_video()
    masks = {}
    for command, extra in (("run", []), ("validate", ["--masks", video.parent / "masks", "--no-auc"])):
        config = tmp_path / f"{command}.yaml"
        config.write_text(f"results:\n  save_masks: {tmp_path / command / 'masks'}\n")
        result = holoburn(command, "--source", f"video:{video}", "--max-frames", 15, "--config", config,
                          "--out", tmp_path / command, *extra)
        assert result.returncode == 0, result.stderr
        masks[command] = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
                          for p in sorted((tmp_path / command / "masks").glob("*.png"))]
    assert len(masks["run"]) == len(masks["validate"]) == 15
    assert all(np.array_equal(a, b) for a, b in zip(masks["run"], masks["validate"]))
    assert any(len(np.unique(m)) > 2 for m in masks["run"])  # real depth maps, not an empty picture
