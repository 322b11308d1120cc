"""When a frame is not assessable it gets a reason and no numbers: real photographs without burn,
a greyscale picture, a dark one, through the real graph with the shipped model; the plain
checks on their own; the overlay says so; validation reports coverage."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from holoburn.clinical.assessability import (
    IMAGE_QUALITY,
    NO_SKIN,
    NOT_A_PHOTOGRAPH,
    OUT_OF_DOMAIN,
    AssessLimits,
    image_problem,
    model_problem,
    pixel_votes,
    skin_confidence,
)
from holoburn.app.synthesis.photos import HELD_OUT_PHOTOS, TRAINING_PHOTOS, load_photo
from test_pipeline import holoburn

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the real photographs (test extra)")

# real photographs without burn that the shipped model never trained on (app/synthesis/photos.py)
PHOTOS = tuple(HELD_OUT_PHOTOS)


def photo(name, size=(480, 640)):
    image = load_photo(name) if name in HELD_OUT_PHOTOS or name in TRAINING_PHOTOS else getattr(skimage_data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, -1)
    return cv2.resize(np.ascontiguousarray(image[..., :3]), (size[1], size[0]), interpolation=cv2.INTER_AREA)


def test_picture_checks():
    limits = AssessLimits()
    assert image_problem(photo("astronaut"), limits) is None
    assert image_problem(photo("camera"), limits) == NOT_A_PHOTOGRAPH  # greyscale
    assert image_problem(photo("astronaut") // 12, limits) == IMAGE_QUALITY  # dark
    assert image_problem(np.full((90, 120, 3), 252, np.uint8), limits) == IMAGE_QUALITY  # overexposed
    blurred = cv2.GaussianBlur(photo("coffee"), (0, 0), 12)
    assert image_problem(blurred, limits) == IMAGE_QUALITY


def test_model_checks():
    limits = AssessLimits(min_skin_share=0.05, min_skin_confidence=0.9)
    assert model_problem(0.01, 0.99, limits) == NO_SKIN
    assert model_problem(0.5, 0.8, limits) == OUT_OF_DOMAIN
    assert model_problem(0.5, 0.95, limits) is None
    assert model_problem(0.5, None, limits) is None  # not measured: no out-of-domain verdict
    logits = np.zeros((6, 4, 4), np.float32)
    logits[1] = 10.0  # all healthy skin, certain
    share, confidence = skin_confidence(*pixel_votes(logits))
    assert share == 1.0 and confidence == pytest.approx(1 / (1 + 5 * np.exp(-10.0)))


def test_real_photographs_are_not_assessable_and_get_no_triage(tmp_path):
    from conftest import write_video

    frames = [photo(n) for n in PHOTOS] + [photo("camera"), photo("astronaut") // 12]
    video = write_video(tmp_path / "photos.mp4", frames)
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{video}", "--out", out)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    reasons = [r["not_assessable_reason"] for r in records]
    # no skin seen, skin unlike any the model knows, or (the colour wheel, a drawing) no photograph detail
    assert all(r in (OUT_OF_DOMAIN, NO_SKIN, IMAGE_QUALITY) for r in reasons[: len(PHOTOS)]), reasons
    assert reasons[len(PHOTOS):] == [NOT_A_PHOTOGRAPH, IMAGE_QUALITY]
    for r in records:
        assert r["status"] == "ok" and r["assessable"] is False
        assert r["triage"] is None and r["burn_share_of_skin"] is None and r["pixels"] is None
        assert r["uncertain_pixels"] is None
        assert r["lane"] == "ROUTINE"  # nothing escalated
    summary = json.loads((out / "summary.json").read_text())
    assert summary["coverage"] == 0.0 and summary["triage_levels"] == {}
    counted = {reason: reasons.count(reason) for reason in set(reasons)}
    assert summary["not_assessable"] == counted and sum(counted.values()) == len(frames)
    assert summary["lane_changes"] == []


def test_the_bundled_sample_is_assessed_and_validation_reports_coverage(tmp_path):
    """The shipped model's own domain: every frame of the sample is assessed (the threshold lets
    98 % of held-in frames through); validate puts coverage beside its metrics."""
    from holoburn.app.run.command import sample_video

    video = sample_video()
    out = tmp_path / "val"
    result = holoburn("validate", "--source", f"video:{video}", "--masks", video.parent / "masks", "--max-frames", 20,
                      "--no-auc", "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["coverage"]["share"] == 1.0 and metrics["coverage"]["not_assessable"] == {}
    assert metrics["assessed_frames"]["pixel_pooled"]["any_burn"]["dice"] == \
        pytest.approx(metrics["pixel_pooled"]["any_burn"]["dice"])


def test_non_photographic_dicom_is_not_a_photograph(tmp_path):
    """pydicom's own CT, MR, NM, RT dose and a colour ultrasound through the real graph: no burn
    figures, whatever their pixels; the run succeeds and the summary counts them."""
    import shutil

    from pydicom.data import get_testdata_file

    folder = tmp_path / "series"
    folder.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtdose.dcm", "ExplVR_BigEnd.dcm"):
        shutil.copy(get_testdata_file(name), folder / name)
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"dicom:{folder}", "--out", out)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 1 + 1 + 1 + 15 + 1  # rtdose holds 15 frames (of 10 x 10: not refused as small)
    assert all(r["assessable"] is False and r["not_assessable_reason"] == NOT_A_PHOTOGRAPH for r in records)
    assert all(r["triage"] is None for r in records)
    assert {r["origin"]["modality"] for r in records} == {"CT", "MR", "NM", "RTDOSE", "US"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["not_assessable"] == {NOT_A_PHOTOGRAPH: len(records)} and summary["coverage"] == 0.0


def test_a_colour_picture_from_a_radiology_modality_is_not_a_photograph():
    from holoburn.clinical.assessability import modality_problem

    assert modality_problem("US") == NOT_A_PHOTOGRAPH  # colour Doppler is RGB, and still no photograph
    assert modality_problem("XC") is None and modality_problem("") is None and modality_problem(None) is None
    assert modality_problem("RTDOSE") == NOT_A_PHOTOGRAPH and modality_problem("NEWTHING") == NOT_A_PHOTOGRAPH
    assert modality_problem("XC", "MONOCHROME2") == NOT_A_PHOTOGRAPH and modality_problem("OT", "PALETTE COLOR")
    assert modality_problem("xc ", "RGB") is None and modality_problem("XC", "YBR_FULL_422") is None


def test_burn_the_model_is_unsure_of_is_uncertain_not_a_depth():
    from holoburn.clinical.assessability import UNCERTAIN, uncertain_burn
    from holoburn.clinical.burn_size import count_pixels
    from holoburn.clinical.overlay import tint

    logits = np.zeros((6, 40, 40), np.float32)
    logits[1] = 6.0  # healthy skin, sure
    logits[5, 5:25, 5:25] = 12.0  # a full-thickness region, sure: reported
    logits[3, 30:33, 30:33] = 12.0  # a 3x3 superficial-partial speck: too small to report
    logits[4, 10:20, 28:38] = 6.2  # deep partial barely above healthy skin: unsure
    limits = AssessLimits(min_pixel_confidence=0.6, min_region_px=12)
    unsure = uncertain_burn(*pixel_votes(logits), limits)
    assert not unsure[5:25, 5:25].any()
    assert unsure[30:33, 30:33].all() and unsure[10:20, 28:38].all()
    assert not unsure[0:5].any()  # healthy skin is never "uncertain burn"
    shown = np.where(unsure, UNCERTAIN, logits.argmax(0)).astype(np.uint8)
    pixels = count_pixels(shown)
    assert pixels[5] == 400 and pixels[3] == 0 and pixels[4] == 0  # only the sure region counts as a depth
    picture = tint(np.full((40, 40, 3), 200, np.uint8), shown)
    assert (picture[31, 31] == picture[15, 33]).all() and not (picture[31, 31] == 200).all()  # drawn grey
