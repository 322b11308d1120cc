"""`holoburn validate` end to end: the same graph as `run`, scored against ground-truth masks."""
from __future__ import annotations

import json
import re

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
    # the recorded command names no path (a folder can name a patient): the source by its id
    assert str(tmp_path) not in metrics["command"] and "video:1" in metrics["command"]
    assert "WARNING: 2 frames without ground truth" in result.stdout
    html = (out / "report.html").read_text()
    assert str(tmp_path) not in html
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


def test_report_lists_worst_burn_errors_and_false_alarms_apart_from_frames_not_assessable(tmp_path, tiny_card):
    """Through the real graph: the tiny model calls the red half full thickness, whatever the truth
    says. Frame 1's truth has more burn (missed), frame 2's another depth, frame 3's none at all
    (a false alarm), frame 4 is grey (not assessable) over a burn."""
    from conftest import write_video

    picture = np.zeros((120, 160, 3), np.uint8)
    picture[:, :80] = (230, 20, 20)
    picture[:, 80:] = (20, 230, 20)
    grey = np.full_like(picture, 128)
    video = write_video(tmp_path / "cases.mp4", [picture, picture, picture, picture, grey, picture])
    truth = tmp_path / "gt"
    truth.mkdir()
    for index, (burn_columns, depth) in enumerate([(80, 5), (120, 5), (80, 4), (0, 5), (80, 5), (80, 5)]):
        mask = np.ones((120, 160), np.uint8)
        mask[:, :burn_columns] = depth
        cv2.imwrite(str(truth / f"{index:06d}.png"), mask)
    out = tmp_path / "val"
    result = holoburn("validate", "--source", f"video:{video}", "--masks", truth, "--model", tiny_card, "--no-auc",
                      "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    worst = metrics["worst_frames"]
    burns = {row["frame"]: row for row in worst["burns_most_wrong"]}
    assert [row["frame"] for row in worst["burns_most_wrong"]][:2] == [2, 1]
    assert burns[2]["wrong_depth"] > 9000 and burns[1]["missed"] > 4500  # 80 x 120 and 40 x 120 pixels
    assert worst["false_alarms"][0]["frame"] == 3 and worst["false_alarms"][0]["truth_burn"] == 0
    assert worst["not_assessable"] == {"not_a_photograph": [{"frame": 4, "truth_burn": 80 * 120}]}
    listed = [row["frame"] for row in worst["burns_most_wrong"] + worst["false_alarms"]]
    assert 4 not in listed
    html = (out / "report.html").read_text()
    section = html[html.index("<h2>Worst frames</h2>"):html.index("<h2>Model card</h2>")]
    assert "Burns most wrong" in section and "Worst false alarms" in section
    assert len(re.findall(r"<figure><img src=\"data:image/png;base64,", section)) == len(listed)
    assert "<strong>Frame 3</strong>: 9,600 pixels called burn where the ground truth has none (the ground truth " \
           "has no burn in this frame)" in section
    assert "<td>not a photograph</td><td>1: 4</td><td>1: 4</td>" in section
    # pacing: as fast as possible unless asked, in metrics.json and beside the figures
    assert metrics["latency_basis"]["pacing"] == "as_fast_as_possible"
    assert "<strong>Pacing: as fast as possible.</strong>" in html and "not bedside latency" in html


def test_realtime_validation_says_so(tmp_path, tiny_card, red_green_video):
    out = tmp_path / "val"
    result = holoburn("validate", "--source", f"video:{red_green_video}", "--masks", write_truth(tmp_path / "gt", range(12)),
                      "--model", tiny_card, "--no-auc", "--realtime", "--max-frames", 6, "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["latency_basis"]["pacing"] == "realtime" and metrics["frames"]["evaluated"] == 6
    assert "<strong>Pacing: paced in real time.</strong>" in (out / "report.html").read_text()
