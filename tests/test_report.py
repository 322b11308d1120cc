"""The validation report: self-contained, complete, and showing the drift gate's drops."""
from __future__ import annotations

import base64
import copy
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the report draws its plots with matplotlib")

from holoburn.app.report.page import SECTION_TITLES, WorstFrames, write_report  # noqa: E402
from holoburn.clinical.depth import NUM_CLASSES  # noqa: E402
from holoburn.clinical.metrics import ValidationAccumulator, compare_precisions  # noqa: E402

H, W = 36, 48
CARD = {
    "model_id": "burn_unet_test",
    "intended_use": "decision support, not diagnosis; synthetic-data demonstration model",
    "classes": ["background", "healthy_skin", "superficial", "superficial_partial", "deep_partial", "full_thickness"],
    "input": {"name": "frames", "size": 64},
}
BACKEND = {"backend": "onnxruntime", "version": "1.18", "device": "CPU", "precision": "fp32"}
COMMAND = "holoburn validate --source video:burns.mp4 --masks masks/ --baseline base.json --out out/ <&>"


def recording(seed: int = 0, frames: int = 6):
    """A few random frames with truth, a noisy prediction and softmax probabilities."""
    rng = np.random.default_rng(seed)
    for i in range(frames):
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        truth = np.ones((H, W), np.uint8)
        truth[5:20, 8:30] = rng.integers(2, NUM_CLASSES)
        truth[:4] = 0
        predicted = truth.copy()
        noise = rng.random((H, W)) < 0.2 * (i + 1) / frames
        predicted[noise] = rng.integers(0, NUM_CLASSES, noise.sum())
        logits = rng.normal(0, 1, (NUM_CLASSES, H, W))
        logits[truth, *np.indices((H, W))] += 2
        probs = np.exp(logits) / np.exp(logits).sum(0)
        yield i, image, truth, predicted, probs.astype(np.float32)


@pytest.fixture(scope="module")
def validated():
    acc = ValidationAccumulator()
    worst = WorstFrames(keep=3)
    rng = np.random.default_rng(1)
    for i, image, truth, predicted, probs in recording():
        dice = acc.add(i, truth, predicted, probs, latency_ms=float(rng.gamma(4, 3)),
                       predicted_tbsa_pct=float(rng.uniform(0, 20)), truth_tbsa_pct=float(rng.uniform(0, 20)),
                       predicted_triage="refer", truth_triage=str(rng.choice(["assess", "refer"])))
        worst.offer(i, dice, image, truth, predicted)
    acc.note_missing_truth(6)
    return acc.summary(resamples=100, elapsed_s=0.5), worst


@pytest.fixture(scope="module")
def report_html(validated, tmp_path_factory):
    metrics, worst = validated
    baseline = copy.deepcopy(metrics)
    baseline["pixel_pooled"]["any_burn"]["dice"] = min(1.0, metrics["pixel_pooled"]["any_burn"]["dice"] + 0.05)
    fp16 = copy.deepcopy(metrics)
    fp16["pixel_pooled"]["any_burn"]["sensitivity"] -= 0.03
    path = write_report(
        tmp_path_factory.mktemp("report"),
        metrics,
        model_card=CARD,
        command=COMMAND,
        backend=BACKEND,
        examples=worst.worst_first(),
        baseline=baseline,
        precision_comparison=compare_precisions({"fp32": metrics, "fp16": fp16}),
    )
    assert path.name == "report.html" and path.is_file()
    return path.read_text(encoding="utf-8")


def test_every_section_is_there(report_html):
    for title in SECTION_TITLES:
        assert f"<h2>{title.replace('&', '&amp;')}</h2>" in report_html, title
    assert "pixel-pooled" in report_html and "per-frame mean" in report_html


def test_intended_use_and_command_are_shown(report_html):
    assert "Decision support, not diagnosis" in report_html
    assert CARD["intended_use"] in report_html
    assert "burn_unet_test" in report_html and "onnxruntime" in report_html
    assert "--baseline base.json --out out/ &lt;&amp;&gt;" in report_html  # exact, escaped


def test_images_are_inline_png(report_html):
    sources = re.findall(r'<img src="([^"]*)"', report_html)
    # confusion matrix, class bars, latency histogram, three example frames
    assert len(sources) == 6
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_nothing_is_fetched_from_outside(report_html):
    assert "http://" not in report_html and "https://" not in report_html
    assert "<script" not in report_html.lower() and "<link" not in report_html.lower()
    assert "@import" not in report_html and "url(" not in report_html
    for src in re.findall(r'(?:src|href)="([^"]*)"', report_html):
        assert src.startswith("data:"), src


def test_baseline_drop_is_flagged(report_html):
    assert "1 metric(s) dropped by more than 2 percentage points" in report_html
    flagged = re.findall(r'<tr class="drop"><td>([^<]*)</td>', report_html)
    assert "Dice, any burn (pixel-pooled)" in flagged


def test_precision_gate_is_flagged(report_html):
    assert "Precision gate: fp16 beyond the gate" in report_html
    flagged = re.findall(r'<tr class="drop"><td>([^<]*)</td>', report_html)
    assert "Sensitivity, any burn (pixel-pooled)" in flagged


def test_report_without_optional_parts(tmp_path):
    acc = ValidationAccumulator()
    empty = np.zeros((8, 8), np.uint8)
    acc.add(0, empty, empty)  # all background: burn metrics undefined
    path = write_report(tmp_path, acc.summary(resamples=10), model_card={"model_id": "m"}, command="holoburn validate",
                        backend={"backend": "onnxruntime"})
    text = path.read_text(encoding="utf-8")
    for title in SECTION_TITLES:
        assert title.replace("&", "&amp;") in text
    assert "No baseline given" in text and "Not run" in text and "No latencies were recorded" in text
    assert "undefined" in text
    assert "https://" not in text and "http://" not in text


def test_worst_frames_keeps_the_lowest_dice_in_bounded_memory():
    worst = WorstFrames(keep=3)
    rng = np.random.default_rng(2)
    dices = rng.uniform(0, 1, 30)
    dices[[4, 9]] = np.nan  # no burn on either side: nothing to show
    dices[12] = dices[20] = 0.0  # a tie at the bottom
    mask = np.zeros((2, 2), np.uint8)
    for i, dice in enumerate(dices):
        image = np.full((2, 2, 3), i, np.uint8)
        worst.offer(i, dice, image, mask, mask)
        image[:] = 255  # the caller reuses its buffer: the kept copy must not change
        assert len(worst._heap) <= 3
    kept = worst.worst_first()
    finite = [(d, i) for i, d in enumerate(dices) if not np.isnan(d)]
    expected = [i for _, i in sorted(finite)[:3]]
    assert [e[0] for e in kept] == expected
    assert expected[:2] == [12, 20]
    for index, image, _, _, dice in kept:
        assert (image == index).all() and dice == dices[index]


def test_worst_frames_tie_keeps_the_earlier_frame():
    worst = WorstFrames(keep=1)
    mask = np.zeros((2, 2), np.uint8)
    image = np.zeros((2, 2, 3), np.uint8)
    assert worst.offer(3, 0.2, image, mask, mask)
    assert not worst.offer(5, 0.2, image, mask, mask)
    assert worst.offer(7, 0.1, image, mask, mask)
    assert [e[0] for e in worst.worst_first()] == [7]
