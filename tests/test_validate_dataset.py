"""`holoburn validate --truth DATASET` (issue 14): stills scored against an imported dataset's
labels, per image and per case. The dataset is made with the real commands (synth --coco, dataset
import, dataset split), tiny pictures, the shipped model on ONNX Runtime (CPU)."""
from __future__ import annotations

import json
import re
import shutil

import cv2
import numpy as np
import pytest

from test_pipeline import holoburn

ORIGINAL_NAME = re.compile(r"patient\d{3}_\d")  # how `synth --coco` names its photographs


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """24 photographs of 8 patients (3 each), superficial burns labelled as burn of unknown depth
    (6, left out of scores), split 50/25/25 by patient with seed 1."""
    root = tmp_path_factory.mktemp("own")
    assert holoburn("synth", "--coco", "--family", "independent", "--frames", 24, "--seed", 11, "--size", "160x120",
                    "--out", root / "export").returncode == 0
    (root / "labels.yaml").write_text("superficial: burn_unspecified\n")
    imported = holoburn("dataset", "import", "--format", "coco", root / "export", root / "data", "--labels",
                        root / "labels.yaml", "--case-pattern", r"^(patient\d+)_")
    assert imported.returncode == 0, imported.stderr
    split = holoburn("dataset", "split", root / "data", "--seed", 1, "--fractions", "0.5,0.25,0.25")
    assert split.returncode == 0, split.stderr
    return root / "data"


@pytest.fixture(scope="module")
def validated(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("val") / "test"
    result = holoburn("validate", "--truth", dataset, "--split", "test", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, json.loads((out / "metrics.json").read_text()), result


def label(dataset, image_id):
    return cv2.imread(str(dataset / "labels" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)


def test_only_the_split_is_run_and_scored(dataset, validated):
    out, metrics, _ = validated
    splits = json.loads((dataset / "splits.json").read_text())
    test = splits["test"]
    assert len(splits["cases"]["test"]) >= 2 and test
    assert [row["image"] for row in metrics["per_image"]] == sorted(test)
    # the other splits' pictures never went through the graph
    assert len((out / "results.jsonl").read_text().splitlines()) == len(test)
    assert metrics["dataset"]["images_outside_split"] == len(splits["train"]) + len(splits["validation"])
    assert metrics["dataset"]["split"] == "test" and metrics["dataset"]["images_scored"] == len(test)
    assert metrics["frames"]["evaluated"] + sum(map(len, metrics["frames"]["not_evaluated"].values())) == len(test)
    assert metrics["frames"]["missing_truth"] == [] and metrics["dataset"]["pictures_without_label"] == []


def test_case_rows_pool_their_image_rows(dataset, validated):
    _, metrics, result = validated
    info = json.loads((dataset / "dataset.json").read_text())
    splits = json.loads((dataset / "splits.json").read_text())
    images, cases = metrics["per_image"], metrics["per_case"]
    assert [row["case"] for row in cases] == splits["cases"]["test"]
    for case in cases:
        rows = [r for r in images if r["case"] == case["case"]]
        assert all(info["images"][r["image"]]["case"] == case["case"] for r in rows)
        assert case["images"] == len(rows) > 0
        assert case["frames_assessed"] == sum(r["status"] == "assessed" for r in rows)
        assert case["unscored_pixels"] == sum(r["unscored_pixels"] for r in rows)
        scored = [r for r in rows if r["any_burn_pixels"] is not None]
        assert case["frames_evaluated"] == len(scored)
        tp, fp, fn = (sum(r["any_burn_pixels"][k] for r in scored) for k in ("tp", "fp", "fn"))
        assert case["any_burn_pixels"] == {"tp": tp, "fp": fp, "fn": fn}
        assert case["any_burn_dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert f"{case['case']:<12} {case['images']:>6}" in result.stdout
    for row in images:  # each image's Dice from its own counts
        if row["any_burn_pixels"]:
            c = row["any_burn_pixels"]
            assert row["any_burn_dice"] == pytest.approx(2 * c["tp"] / (2 * c["tp"] + c["fp"] + c["fn"]))
    # the cases add up to the headline figure
    pooled = metrics["pixel_pooled"]["any_burn"]["pixels"]
    assert (pooled["tp"], pooled["fp"], pooled["fn"]) == tuple(
        sum(c["any_burn_pixels"][k] for c in cases) for k in ("tp", "fp", "fn"))
    assert 0.3 < metrics["pixel_pooled"]["any_burn"]["dice"] <= 1  # a real model on real burns, not noise


def test_burn_of_unknown_depth_is_left_out_and_counted_per_image(dataset, validated):
    _, metrics, _ = validated
    for row in metrics["per_image"]:
        truth = label(dataset, row["image"])
        assert row["unscored_pixels"] == int(np.isin(truth, (6, 255)).sum()), row["image"]
    assert metrics["unscored_truth_pixels"] == sum(r["unscored_pixels"] for r in metrics["per_image"]) > 0
    # scored pixels are the known ones: the headline counts exclude every 6
    known = sum(int((label(dataset, r["image"]) < 6).sum()) for r in metrics["per_image"] if r["any_burn_pixels"])
    pixels = metrics["pixel_pooled"]["any_burn"]["pixels"]
    assert sum(pixels[k] for k in ("tp", "fp", "fn", "tn")) == known


def test_report_has_both_tables_and_no_original_name(dataset, validated):
    out, metrics, result = validated
    html = (out / "report.html").read_text()
    section = html[html.index("<h2>Each image and each case</h2>"):html.index("<h2>Burn size")]
    assert "<h3>Each case</h3>" in section and "<h3>Each image</h3>" in section
    for row in metrics["per_image"]:
        assert f"<td>{row['image']}</td><td>{row['case']}</td>" in section
    for row in metrics["per_case"]:
        assert f"<td>{row['case']}</td><td>{row['images']}</td>" in section
    assert "holoburn validate --truth DATASET --split test --out OUT" == metrics["command"]
    for text in (html, (out / "metrics.json").read_text(), (out / "results.jsonl").read_text(), result.stdout,
                 result.stderr):
        text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", text)
        assert not ORIGINAL_NAME.search(text) and str(dataset.parent) not in text


def test_pictures_of_a_folder_are_paired_by_id_and_the_unlabelled_named(dataset, tmp_path):
    splits = json.loads((dataset / "splits.json").read_text())
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    kept = splits["test"][:-1]  # the last test label gets no picture
    for image_id in kept + splits["train"][:1]:  # a train picture: another split, not run
        shutil.copy(dataset / "images" / f"{image_id}.png", pictures / f"{image_id}.png")
    shutil.copy(dataset / "images" / f"{kept[0]}.png", pictures / "case9999_001.png")  # an id of no image
    shutil.copy(dataset / "images" / f"{kept[0]}.png", pictures / "ward3 photo.png")  # not an id: by frame
    out = tmp_path / "val"
    result = holoburn("validate", "--source", f"image:{pictures}", "--truth", dataset, "--split", "test",
                      "--no-auc", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    run = sorted([*kept, "case9999_001", "ward3 photo"])  # the pictures run, in the reader's order
    assert metrics["dataset"]["pictures_without_label"] == [
        {"frame": run.index("case9999_001"), "image": "case9999_001"},
        {"frame": run.index("ward3 photo"), "image": None}]
    assert metrics["dataset"]["images_outside_split"] == 1
    assert metrics["dataset"]["labels_without_picture"] == [splits["test"][-1]]
    assert [row["image"] for row in metrics["per_image"]] == kept
    assert metrics["frames"]["missing_truth"] == sorted([run.index("case9999_001"), run.index("ward3 photo")])
    assert "2 pictures have no label in the dataset (not scored): case9999_001, frame " in result.stdout
    assert splits["test"][-1] in result.stdout and "ward3" not in result.stdout + (out / "report.html").read_text()


def test_without_a_split_every_image_has_a_row(dataset, tmp_path):
    """No --split: the whole dataset; --max-frames leaves the rest listed as not processed."""
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    (copy / "splits.json").unlink()
    out = tmp_path / "val"
    result = holoburn("validate", "--truth", copy, "--max-frames", 3, "--no-auc", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    info = json.loads((copy / "dataset.json").read_text())
    assert [row["image"] for row in metrics["per_image"]] == sorted(info["images"])
    assert sum(row["status"] != "not_processed" for row in metrics["per_image"]) == 3
    assert metrics["dataset"]["cases"] == len(metrics["per_case"]) == info["num_cases"]
    missing = holoburn("validate", "--truth", copy, "--split", "test", "--out", tmp_path / "no")
    assert missing.returncode == 2 and "has no splits.json" in missing.stderr and str(copy) in missing.stderr


def test_bad_truth_and_split_are_named(dataset, tmp_path):
    unknown = holoburn("validate", "--truth", dataset, "--split", "holdout", "--out", tmp_path / "a")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "no split 'holdout'" in unknown.stderr and "train, validation, test" in unknown.stderr
    (tmp_path / "photos").mkdir()
    not_a_dataset = holoburn("validate", "--truth", tmp_path / "photos", "--out", tmp_path / "b")
    assert not_a_dataset.returncode == 2 and "Traceback" not in not_a_dataset.stderr
    assert f"{tmp_path / 'photos'} has no dataset.json" in not_a_dataset.stderr
    assert "holoburn dataset import" in not_a_dataset.stderr
    both = holoburn("validate", "--truth", dataset, "--masks", tmp_path, "--out", tmp_path / "c")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    split_of_masks = holoburn("validate", "--source", f"image:{dataset / 'images'}", "--masks", dataset / "labels",
                              "--split", "test", "--out", tmp_path / "d")
    assert split_of_masks.returncode == 2 and "--split test picks images of a dataset" in split_of_masks.stderr
    video = holoburn("validate", "--source", "video:x.mp4", "--truth", dataset, "--out", tmp_path / "e")
    assert video.returncode == 2 and "give --source image:DIR" in video.stderr
