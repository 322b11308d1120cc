"""The validation report: self-contained, complete, and showing the drift gate's drops."""
from __future__ import annotations

import base64
import copy
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the report draws its plots with matplotlib")

from holoburn.app.report.page import SECTION_TITLES, WorstFrames, burn_errors, write_report  # noqa: E402
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
        acc.add(i, truth, predicted, probs, latency_ms=float(rng.gamma(4, 3)),
                predicted_tbsa_pct=float(rng.uniform(0, 20)), truth_tbsa_pct=float(rng.uniform(0, 20)),
                predicted_triage="refer", truth_triage=str(rng.choice(["assess", "refer"])))
        if i < 5:
            worst.offer(i, image, truth, predicted)
        else:
            worst.note_not_assessable(i, "image_quality", truth)
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
        worst=worst,
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


def test_images_are_inline_png(report_html, validated):
    sources = re.findall(r'<img src="([^"]*)"', report_html)
    # confusion matrix, class bars, latency histogram, then each list's frames
    worst = validated[1]
    assert len(sources) == 3 + len(worst.burns_most_wrong()) + len(worst.false_alarms()) == 3 + 3 + 3
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


def test_worst_frames_section_names_both_lists_and_the_frames_left_out(report_html, validated):
    worst = validated[1]
    assert "<h2>Worst frames</h2>" in report_html
    assert "<h3>Burns most wrong: burn missed or given the wrong depth</h3>" in report_html
    assert "<h3>Worst false alarms: burn called where there is none</h3>" in report_html
    captions = re.findall(r"<figcaption><strong>Frame (\d+)</strong>", report_html)
    expected = [e.frame_index for e in worst.burns_most_wrong()] + [e.frame_index for e in worst.false_alarms()]
    assert [int(c) for c in captions] == expected
    assert 5 not in expected  # frame 5 was not assessable: listed apart, with its reason
    assert re.search(r"<td>image quality</td><td>1: 5</td><td>1: 5</td>", report_html)


def test_latency_is_explained_next_to_the_figures(validated, tmp_path):
    from holoburn.app.run.validate import latency_basis

    metrics = copy.deepcopy(validated[0])
    summary = {"stage_ms_median": {"preprocess": 1.5, "inference": 30.0, "postprocess": 8.0, "overlay": 5.0,
                                   "sink": 0.0}, "device": "cpu", "backend": "onnxruntime", "precision": "fp32"}
    for realtime, words in ((False, "as fast as possible"), (True, "paced in real time")):
        metrics["latency_basis"] = latency_basis({"source": {"realtime": realtime}}, summary)
        text = write_report(tmp_path / str(realtime), metrics, model_card=CARD, command=COMMAND,
                            backend=BACKEND).read_text(encoding="utf-8")
        speed = text[text.index("<h2>Speed</h2>"):text.index("<h2>Precision comparison</h2>")]
        assert f"<strong>Pacing: {words}.</strong>" in speed and f"replay {words}" in text  # at a glance too
        assert "Replay latency, not bedside latency." in speed
        assert "<strong>From</strong> the source operator handing the decoded frame to the graph" in speed
        assert "inference" in speed and "Not included:</strong> reading and decoding the video" in speed
        assert "inference 30.0&nbsp;ms" in speed  # where the time goes
        # the explanation comes before the figures it explains
        assert speed.index("Replay latency, not bedside latency.") < speed.index("median (p50)")
    # metrics from before the basis was recorded still render, and say so
    del metrics["latency_basis"]
    text = write_report(tmp_path / "old", metrics, model_card=CARD, command=COMMAND, backend=BACKEND).read_text()
    assert "was not recorded" in text


def masks_with(truth_burn=0, missed=0, wrong_depth=0, false_alarm=0, width=40):
    """(truth, predicted) (2, width) masks with exactly these burn errors: row 0 holds the truth's
    burn (full thickness), row 1 no burn in truth (healthy skin)."""
    truth = np.ones((2, width), np.uint8)
    truth[0, :truth_burn] = 5
    predicted = truth.copy()
    predicted[0, :missed] = 1
    predicted[0, missed:missed + wrong_depth] = 4
    predicted[1, :false_alarm] = 3
    return truth, predicted


def test_burn_errors_count_missed_wrong_depth_and_false_alarms():
    errors = burn_errors(*masks_with(truth_burn=10, missed=2, wrong_depth=3, false_alarm=4))
    assert errors[:4] == (10, 2, 3, 4) and errors.burn_wrong == 5
    assert errors.dice == pytest.approx(2 * 8 / (2 * 8 + 4 + 2))  # any burn: wrong depth is still burn
    assert np.isnan(burn_errors(*masks_with()).dice)


def test_worst_frames_ranks_burn_errors_and_false_alarms_apart():
    worst = WorstFrames(keep=2)
    image = np.zeros((2, 40, 3), np.uint8)
    frames = {
        0: masks_with(truth_burn=10),  # right: in neither list
        1: masks_with(truth_burn=10, missed=4),
        2: masks_with(truth_burn=10, wrong_depth=6),
        3: masks_with(false_alarm=5),  # no burn at all in the truth
        4: masks_with(truth_burn=10, missed=2, false_alarm=3),
        5: masks_with(truth_burn=20, missed=4),  # ties with frame 1: the earlier frame stays
    }
    for index, (truth, predicted) in frames.items():
        image[:] = index
        worst.offer(index, image, truth, predicted)
        image[:] = 255  # the caller reuses its buffer: a kept copy must not change
    worst.note_not_assessable(6, "image_quality", frames[2][0])
    worst.note_not_assessable(7, "no_skin_in_view", frames[3][0])
    assert [e.frame_index for e in worst.burns_most_wrong()] == [2, 1]
    assert [e.frame_index for e in worst.false_alarms()] == [3, 4]
    for e in worst.burns_most_wrong() + worst.false_alarms():
        assert (e.frame_rgb == e.frame_index).all() and np.array_equal(e.predicted_mask, frames[e.frame_index][1])
    summary = worst.summary()
    assert summary["burns_most_wrong"][0] == {"frame": 2, "truth_burn": 10, "missed": 0, "wrong_depth": 6,
                                              "false_alarm": 0, "any_burn_dice": 1.0}
    assert summary["false_alarms"][0]["truth_burn"] == 0 and summary["false_alarms"][0]["any_burn_dice"] == 0.0
    assert summary["not_assessable"] == {"image_quality": [{"frame": 6, "truth_burn": 10}],
                                         "no_skin_in_view": [{"frame": 7, "truth_burn": 0}]}


def test_worst_frames_keep_the_largest_errors_in_bounded_memory():
    worst = WorstFrames(keep=3)
    rng = np.random.default_rng(2)
    image = np.zeros((2, 40, 3), np.uint8)
    errors = {}
    for index in range(40):
        truth, predicted = masks_with(truth_burn=20, missed=int(rng.integers(0, 8)),
                                      wrong_depth=int(rng.integers(0, 8)), false_alarm=int(rng.integers(0, 12)))
        errors[index] = worst.offer(index, image, truth, predicted)
        assert len(worst._burns._heap) <= 3 and len(worst._false_alarms._heap) <= 3
    by_burn = sorted((i for i in errors if errors[i].burn_wrong), key=lambda i: (-errors[i].burn_wrong, i))[:3]
    by_alarm = sorted((i for i in errors if errors[i].false_alarm), key=lambda i: (-errors[i].false_alarm, i))[:3]
    assert [e.frame_index for e in worst.burns_most_wrong()] == by_burn
    assert [e.frame_index for e in worst.false_alarms()] == by_alarm
