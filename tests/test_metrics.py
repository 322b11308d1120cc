"""Validation metrics checked against scikit-learn on random and hand-made masks."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from holoburn.clinical.depth import BURN_CLASSES, CLASS_NAMES, NUM_CLASSES
from holoburn.clinical.metrics import (
    ANY_BURN,
    RATIO_METRICS,
    ValidationAccumulator,
    any_burn_dice,
    auc_from_histograms,
    bootstrap_intervals,
    compare_precisions,
    compare_to_baseline,
    confusion_matrix,
    dice_per_class,
    outcome_counts,
    ratios,
    tbsa_error,
    triage_agreement,
)

sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn is the reference for these checks")

H, W = 24, 32


def sklearn_ratios(truth_positive: np.ndarray, predicted_positive: np.ndarray) -> dict:
    """Each ratio from scikit-learn on one binary problem; NaN where it is undefined."""
    t = truth_positive.ravel().astype(int)
    p = predicted_positive.ravel().astype(int)
    nan = np.nan
    return {
        "sensitivity": sk.recall_score(t, p, pos_label=1, labels=[0, 1], zero_division=nan),
        "specificity": sk.recall_score(1 - t, 1 - p, pos_label=1, labels=[0, 1], zero_division=nan),
        "ppv": sk.precision_score(t, p, pos_label=1, labels=[0, 1], zero_division=nan),
        "npv": sk.precision_score(1 - t, 1 - p, pos_label=1, labels=[0, 1], zero_division=nan),
        "dice": sk.f1_score(t, p, pos_label=1, labels=[0, 1], zero_division=nan),
        # jaccard_score has no NaN option: undefined exactly when neither side has a positive
        "iou": sk.jaccard_score(t, p, pos_label=1, labels=[0, 1], zero_division=0) if (t | p).any() else nan,
    }


def binary(mask: np.ndarray, target: str) -> np.ndarray:
    if target == ANY_BURN:
        return np.isin(mask, BURN_CLASSES)
    return mask == CLASS_NAMES.index(target)


def assert_same(ours, reference, what: str, atol: float = 1e-12):
    if reference is None or np.isnan(reference):
        assert ours is None or np.isnan(ours), f"{what}: expected undefined, got {ours}"
    else:
        assert ours is not None and abs(ours - reference) <= atol, f"{what}: {ours} vs {reference}"


def pooled_entry(summary, target):
    block = summary["pixel_pooled"]
    return block[ANY_BURN] if target == ANY_BURN else block["per_class"][target]


def mean_entry(summary, target):
    block = summary["per_frame_mean"]
    return block[ANY_BURN] if target == ANY_BURN else block["per_class"][target]


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).astype(np.float32)


def random_recording(seed: int, frames: int = 12, empty_class: int | None = 5):
    """Random truth, a noisy prediction and softmax probabilities; one class may be left out."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(frames):
        truth = rng.integers(0, NUM_CLASSES, (H, W)).astype(np.uint8)
        predicted = truth.copy()
        noise = rng.random((H, W)) < 0.35
        predicted[noise] = rng.integers(0, NUM_CLASSES, noise.sum())
        if empty_class is not None:
            truth[truth == empty_class] = 1
            predicted[predicted == empty_class] = 0
        logits = rng.normal(0, 1.5, (NUM_CLASSES, H, W))
        logits[truth, *np.indices((H, W))] += 1.5
        items.append((i, truth, predicted, softmax(logits)))
    return items


def accumulate(items, **add_kwargs) -> ValidationAccumulator:
    acc = ValidationAccumulator()
    for i, truth, predicted, probs in items:
        acc.add(i, truth, predicted, probs, **add_kwargs)
    return acc


# --- the three functions others call ------------------------------------------------------------


def test_confusion_matrix_matches_sklearn():
    _, truth, predicted, _ = random_recording(0, frames=1, empty_class=None)[0]
    expected = sk.confusion_matrix(truth.ravel(), predicted.ravel(), labels=list(range(NUM_CLASSES)))
    np.testing.assert_array_equal(confusion_matrix(truth, predicted), expected)


def test_dice_helpers_match_sklearn():
    _, truth, predicted, _ = random_recording(1, frames=1)[0]
    cm = confusion_matrix(truth, predicted)
    dice = dice_per_class(cm)
    for c, name in enumerate(CLASS_NAMES):
        assert_same(dice[c], sklearn_ratios(truth == c, predicted == c)["dice"], name)
    assert_same(any_burn_dice(cm), sklearn_ratios(binary(truth, ANY_BURN), binary(predicted, ANY_BURN))["dice"], "any burn")


# --- pooled and per-frame metrics against scikit-learn -----------------------------------------


@pytest.mark.parametrize("seed", [2, 3])
def test_pixel_pooled_metrics_match_sklearn(seed):
    items = random_recording(seed)
    summary = accumulate(items).summary(resamples=50)
    truth = np.stack([t for _, t, _, _ in items])
    predicted = np.stack([p for _, _, p, _ in items])
    for target in (*CLASS_NAMES, ANY_BURN):
        entry = pooled_entry(summary, target)
        t, p = binary(truth, target), binary(predicted, target)
        for metric, value in sklearn_ratios(t, p).items():
            assert_same(entry[metric], value, f"pooled {target} {metric}")
        tn, fp, fn, tp = sk.confusion_matrix(t.ravel(), p.ravel(), labels=[False, True]).ravel()
        assert entry["pixels"] == {"truth": tp + fn, "predicted": tp + fp, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def test_per_frame_mean_matches_sklearn_over_defined_frames():
    items = random_recording(4)
    # an all-background frame: burn Dice, sensitivity, PPV undefined there
    items.append((len(items), np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8), None))
    summary = accumulate([(i, t, p, None) for i, t, p, _ in items]).summary(resamples=50)
    for target in (*CLASS_NAMES, ANY_BURN):
        entry = mean_entry(summary, target)
        per_frame = [sklearn_ratios(binary(t, target), binary(p, target)) for _, t, p, _ in items]
        for metric in RATIO_METRICS:
            values = np.array([f[metric] for f in per_frame])
            defined = ~np.isnan(values)
            assert entry["frames_defined"][metric] == defined.sum()
            expected = values[defined].mean() if defined.any() else np.nan
            assert_same(entry[metric], expected, f"per-frame {target} {metric}")
    assert mean_entry(summary, ANY_BURN)["frames_defined"]["dice"] == len(items) - 1


def test_confusion_matrix_in_summary_is_the_pooled_one():
    items = random_recording(5)
    summary = accumulate(items).summary(resamples=10)
    truth = np.concatenate([t.ravel() for _, t, _, _ in items])
    predicted = np.concatenate([p.ravel() for _, _, p, _ in items])
    expected = sk.confusion_matrix(truth, predicted, labels=list(range(NUM_CLASSES)))
    assert summary["confusion_matrix"]["counts"] == expected.tolist()


# --- AUC from histograms ---------------------------------------------------------------------------


def test_auc_matches_sklearn_within_binning_bound():
    items = random_recording(6)
    summary = accumulate(items).summary(resamples=10)
    truth = np.stack([t for _, t, _, _ in items])
    probs = np.stack([p for _, _, _, p in items], 1)  # (C, N, H, W)
    scores = {name: probs[c] for c, name in enumerate(CLASS_NAMES)}
    scores[ANY_BURN] = probs[list(BURN_CLASSES)].sum(0)
    for target, score in scores.items():
        entry = pooled_entry(summary, target)
        positives = binary(truth, target).ravel()
        if positives.all() or not positives.any():
            assert entry["auc"] is None and entry["auc_error_bound"] is None
            continue
        reference = sk.roc_auc_score(positives, score.ravel())
        assert entry["auc_error_bound"] < 0.01
        assert abs(entry["auc"] - reference) <= entry["auc_error_bound"] + 1e-9, target
    # full-thickness is absent from this truth: its AUC is undefined
    assert pooled_entry(summary, "full_thickness")["auc"] is None


def test_auc_bound_covers_coarse_ties():
    # all scores in one bin: AUC reads 0.5 with bound 0.5, whatever the exact order
    auc, bound = auc_from_histograms(np.array([0, 3, 0]), np.array([0, 5, 0]))
    assert (auc, bound) == (0.5, 0.5)
    auc, bound = auc_from_histograms(np.array([0, 0, 4]), np.array([2, 0, 0]))
    assert (auc, bound) == (1.0, 0.0)


def test_auc_absent_without_probabilities():
    items = [(i, t, p, None) for i, t, p, _ in random_recording(7, frames=3)]
    summary = accumulate(items).summary(resamples=10)
    assert summary["auc"]["frames_with_probabilities"] == 0
    assert pooled_entry(summary, ANY_BURN)["auc"] is None


# --- hand-made edge cases -----------------------------------------------------------------------


def test_all_background_frame_leaves_burn_metrics_undefined():
    acc = ValidationAccumulator()
    dice = acc.add(0, np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8))
    assert np.isnan(dice)
    summary = acc.summary(resamples=20)
    burn = pooled_entry(summary, ANY_BURN)
    for metric in ("sensitivity", "ppv", "dice", "iou"):
        assert burn[metric] is None
        assert mean_entry(summary, ANY_BURN)[metric] is None
        assert mean_entry(summary, ANY_BURN)["frames_defined"][metric] == 0
    assert burn["specificity"] == 1.0 and burn["npv"] == 1.0
    # the background class covers the whole frame: its specificity is undefined, Dice perfect
    background = pooled_entry(summary, "background")
    assert background["specificity"] is None and background["dice"] == 1.0
    assert summary["confidence_intervals"]["pixel_pooled"][ANY_BURN]["dice"] is None
    json.dumps(summary, allow_nan=False)


def test_single_pixel_regions():
    truth = np.ones((5, 5), np.uint8)
    truth[2, 2] = 5  # one full-thickness pixel
    hit = truth.copy()
    miss = np.ones((5, 5), np.uint8)
    miss[0, 0] = 5  # one pixel, in the wrong place
    acc = ValidationAccumulator()
    assert acc.add(0, truth, hit) == 1.0
    assert acc.add(1, truth, miss) == 0.0
    summary = acc.summary(resamples=20)
    pooled = pooled_entry(summary, "full_thickness")
    assert pooled["dice"] == pytest.approx(0.5)
    assert pooled["sensitivity"] == pytest.approx(0.5) and pooled["ppv"] == pytest.approx(0.5)
    assert pooled["pixels"] == {"truth": 2, "predicted": 2, "tp": 1, "fp": 1, "fn": 1, "tn": 47}
    means = mean_entry(summary, "full_thickness")
    assert means["dice"] == pytest.approx(0.5) and means["frames_defined"]["dice"] == 2
    # classes absent from truth and prediction: undefined, never 0 or 1
    for name in ("superficial", "superficial_partial", "deep_partial", "background"):
        entry = pooled_entry(summary, name)
        assert entry["dice"] is None and entry["sensitivity"] is None and entry["ppv"] is None
        assert entry["specificity"] == 1.0


def test_class_predicted_but_absent_from_truth():
    truth = np.ones((3, 3), np.uint8)
    predicted = truth.copy()
    predicted[1, 1] = 4
    acc = ValidationAccumulator()
    acc.add(0, truth, predicted)
    entry = pooled_entry(acc.summary(resamples=10), "deep_partial")
    assert entry["sensitivity"] is None  # no truth pixel
    assert entry["ppv"] == 0.0 and entry["dice"] == 0.0 and entry["iou"] == 0.0


def test_summary_is_strict_json_and_lists_missing_frames():
    items = random_recording(8, frames=4)
    acc = accumulate(items, latency_ms=12.5)
    acc.note_missing_truth(7)
    acc.note_extra_truth(9)
    acc.note_not_evaluated(4, "decode_error")
    summary = json.loads(json.dumps(acc.summary(resamples=20, elapsed_s=2.0), allow_nan=False))
    assert summary["frames"]["evaluated"] == 4
    assert summary["frames"]["missing_truth"] == [7]
    assert summary["frames"]["extra_truth"] == [9]
    assert summary["frames"]["not_evaluated"] == {"decode_error": [4]}
    assert summary["throughput_fps"] == 2.0


def test_empty_accumulator_summarises():
    summary = ValidationAccumulator().summary()
    assert summary["frames"]["evaluated"] == 0
    assert pooled_entry(summary, ANY_BURN)["dice"] is None
    assert summary["latency_ms"] is None and summary["confidence_intervals"]["pixel_pooled"] is None
    json.dumps(summary, allow_nan=False)


def test_bad_input_is_named():
    acc = ValidationAccumulator()
    mask = np.zeros((4, 4), np.uint8)
    acc.add(3, mask, mask)
    with pytest.raises(ValueError, match="frame 3 was added twice"):
        acc.add(3, mask, mask)
    with pytest.raises(ValueError, match="frame 4.*differ in size"):
        acc.add(4, mask, np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match="frame 5.*class 255"):
        acc.add(5, np.full((4, 4), 255, np.uint8), mask)
    with pytest.raises(ValueError, match="frame 7.*triage level 'urgent'"):
        acc.add(7, mask, mask, predicted_triage="urgent", truth_triage="none")
    with pytest.raises(ValueError, match="frame 6.*resize"):
        acc.add(6, mask, mask, np.zeros((NUM_CLASSES, 8, 8), np.float32))
    assert len(acc) == 1  # rejected frames do not count


def test_frame_order_does_not_matter():
    items = random_recording(9, frames=6)
    forward = accumulate(items).summary(resamples=100, seed=3)
    backward = accumulate(items[::-1]).summary(resamples=100, seed=3)
    assert forward == backward


# --- bootstrap --------------------------------------------------------------------------------------


def test_bootstrap_is_seeded_and_matches_a_plain_resampling():
    items = random_recording(10, frames=15)
    acc = accumulate(items)
    a = acc.summary(resamples=200, seed=11)["confidence_intervals"]
    b = acc.summary(resamples=200, seed=11)["confidence_intervals"]
    c = acc.summary(resamples=200, seed=12)["confidence_intervals"]
    assert a == b and a != c
    # a plain frame-by-frame resampling with the same draws gives the same interval
    _, counts = acc.frame_counts()
    rng = np.random.Generator(np.random.PCG64(11))
    picks = rng.integers(0, len(counts), (200, len(counts)))
    burn = len(CLASS_NAMES)
    pooled = [ratios(counts[p].sum(0))["dice"][burn] for p in picks]
    per_frame = ratios(counts)["dice"][:, burn]
    means = [np.nanmean(per_frame[p]) for p in picks]
    for draws, aggregation in ((pooled, "pixel_pooled"), (means, "per_frame_mean")):
        low, high = np.percentile(draws, [2.5, 97.5])
        got = a[aggregation][ANY_BURN]["dice"]
        assert got["low"] == pytest.approx(low) and got["high"] == pytest.approx(high)
        assert got["resamples_defined"] == 200
    # chunking the resamples changes nothing
    chunked = bootstrap_intervals(counts, resamples=200, seed=11, chunk=7)
    assert chunked["pixel_pooled"] == a["pixel_pooled"]


def test_bootstrap_interval_holds_the_estimate():
    summary = accumulate(random_recording(13, frames=20)).summary(resamples=300)
    for name in ("healthy_skin", "deep_partial"):
        ci = summary["confidence_intervals"]["pixel_pooled"][name]["dice"]
        assert ci["low"] <= pooled_entry(summary, name)["dice"] <= ci["high"]


# --- latency, %TBSA and triage ------------------------------------------------------------------------


def test_latency_percentiles():
    acc = ValidationAccumulator()
    latencies = np.random.default_rng(14).gamma(4.0, 3.0, 40)
    mask = np.zeros((2, 2), np.uint8)
    for i, ms in enumerate(latencies):
        acc.add(i, mask, mask, latency_ms=ms)
    latency = acc.summary(resamples=10)["latency_ms"]
    for q in (50, 95, 99):
        assert latency[f"p{q}"] == pytest.approx(np.percentile(latencies, q), abs=1e-3)  # rounded to microseconds
    assert sum(latency["histogram"]["counts"]) == 40


def test_tbsa_error_matches_sklearn():
    rng = np.random.default_rng(15)
    truth = rng.uniform(0, 20, 30)
    predicted = truth + rng.normal(0, 2, 30)
    result = tbsa_error(predicted, truth)
    assert result["mean_absolute_error_points"] == pytest.approx(sk.mean_absolute_error(truth, predicted))
    assert result["rmse_points"] == pytest.approx(np.sqrt(sk.mean_squared_error(truth, predicted)))
    assert result["mean_signed_error_points"] == pytest.approx((predicted - truth).mean())
    over = (predicted > 10) == (truth > 10)
    assert result["threshold_agreement"] == pytest.approx(over.mean())
    assert tbsa_error([], []) is None


def test_tbsa_and_triage_through_the_accumulator():
    acc = ValidationAccumulator()
    mask = np.zeros((2, 2), np.uint8)
    acc.add(0, mask, mask, predicted_tbsa_pct=12.0, truth_tbsa_pct=8.0, predicted_triage="refer", truth_triage="assess")
    acc.add(1, mask, mask, predicted_tbsa_pct=3.0, truth_tbsa_pct=None, predicted_triage="none", truth_triage="refer")
    summary = acc.summary(resamples=10)
    assert summary["tbsa"]["frames"] == 1 and summary["tbsa"]["mean_signed_error_points"] == 4.0
    assert summary["tbsa"]["false_over_threshold"] == 1
    assert summary["triage"]["frames"] == 2
    assert summary["triage"]["over_triage"] == 1 and summary["triage"]["under_triage"] == 1


def test_triage_agreement_matches_sklearn_kappa():
    rng = np.random.default_rng(16)
    levels = ["none", "assess", "refer"]
    truth = list(rng.choice(levels, 50))
    predicted = [t if rng.random() < 0.7 else rng.choice(levels) for t in truth]
    result = triage_agreement(predicted, truth)
    assert result["cohen_kappa"] == pytest.approx(sk.cohen_kappa_score(truth, predicted))
    assert result["agreement"] == pytest.approx(sk.accuracy_score(truth, predicted))
    table = sk.confusion_matrix(truth, predicted, labels=levels)
    assert result["table"]["counts"] == table.tolist()
    assert result["under_triage"] == np.tril(table, -1).sum()
    one_level = triage_agreement(["none"] * 3, ["none"] * 3)
    assert one_level["agreement"] == 1.0 and one_level["cohen_kappa"] is None
    with pytest.raises(ValueError, match="unknown triage level"):
        triage_agreement(["urgent"], ["none"])


# --- drift gate and precision comparison ----------------------------------------------------------------


@pytest.fixture(scope="module")
def baseline_summary():
    return accumulate(random_recording(17, frames=8)).summary(resamples=50)


def test_drift_gate_flags_exactly_the_dropped_metrics(baseline_summary):
    current = copy.deepcopy(baseline_summary)
    base_burn = baseline_summary["pixel_pooled"][ANY_BURN]["dice"]
    current["pixel_pooled"][ANY_BURN]["dice"] = base_burn - 0.03  # dropped 3 points: flagged
    current["per_frame_mean"]["per_class"]["deep_partial"]["sensitivity"] -= 0.021  # 2.1: flagged
    current["pixel_pooled"]["per_class"]["healthy_skin"]["iou"] -= 0.02  # exactly 2: not flagged
    current["pixel_pooled"]["per_class"]["superficial"]["ppv"] -= 0.019  # 1.9: not flagged
    current["pixel_pooled"]["per_class"]["background"]["dice"] += 0.05  # improved: not flagged
    drops = compare_to_baseline(current, baseline_summary)
    assert [d["metric"] for d in drops] == [
        "pixel_pooled.any_burn.dice",
        "per_frame_mean.deep_partial.sensitivity",
    ]
    assert drops[0]["drop_points"] == pytest.approx(3.0)
    assert drops[0]["baseline"] == base_burn
    assert compare_to_baseline(baseline_summary, baseline_summary) == []
    # the threshold is configurable
    flagged = {d["metric"] for d in compare_to_baseline(current, baseline_summary, threshold_points=1.5)}
    assert "pixel_pooled.superficial.ppv" in flagged and "pixel_pooled.healthy_skin.iou" in flagged


def test_drift_gate_ignores_metrics_undefined_on_either_side(baseline_summary):
    current = copy.deepcopy(baseline_summary)
    current["pixel_pooled"][ANY_BURN]["dice"] = None
    assert compare_to_baseline(current, baseline_summary) == []


def test_precision_comparison_against_fp32(baseline_summary):
    fp16 = copy.deepcopy(baseline_summary)
    fp16["pixel_pooled"][ANY_BURN]["dice"] -= 0.005
    int8 = copy.deepcopy(baseline_summary)
    int8["pixel_pooled"]["per_class"]["deep_partial"]["sensitivity"] -= 0.015
    table = compare_precisions({"int8": int8, "fp32": baseline_summary, "fp16": fp16})
    assert table["precisions"] == ["fp32", "int8", "fp16"]
    rows = {r["metric"]: r for r in table["rows"]}
    burn = rows["pixel_pooled.any_burn.dice"]
    assert burn["delta_points"]["fp16"] == pytest.approx(-0.5) and not burn["beyond_gate"]["fp16"]
    assert rows["pixel_pooled.deep_partial.sensitivity"]["beyond_gate"]["int8"]
    assert table["beyond_gate"] == ["int8"]
    with pytest.raises(ValueError, match="fp32"):
        compare_precisions({"fp16": fp16})


def test_outcome_counts_add_up():
    _, truth, predicted, _ = random_recording(18, frames=1, empty_class=None)[0]
    counts = outcome_counts(confusion_matrix(truth, predicted))
    assert counts.shape == (NUM_CLASSES + 1, 4)
    assert (counts.sum(1) == truth.size).all()


def test_block_bootstrap_widens_intervals_on_correlated_frames():
    """Video frames come in runs of alike frames: resampling single frames treats 200 frames as
    200 independent looks and gives too narrow an interval; blocks of the run length do not."""
    from holoburn.clinical.metrics import bootstrap_intervals, outcome_counts

    frames = []
    for run in range(10):  # 10 runs of 20 identical frames, alternating good and poor burn Dice
        tp = 90 if run % 2 == 0 else 40
        cm = np.zeros((6, 6), np.int64)
        cm[5, 5], cm[5, 1], cm[1, 1] = tp, 100 - tp, 400
        frames += [cm] * 20
    counts = outcome_counts(np.stack(frames))
    width = {}
    for block in (1, 20):
        ci = bootstrap_intervals(counts, resamples=400, seed=3, block_frames=block)
        dice = ci["per_frame_mean"]["any_burn"]["dice"]
        width[block] = dice["high"] - dice["low"]
        assert ci["block_frames"] == block
    assert width[20] > 2 * width[1]
    # block 1 is the plain bootstrap, draw for draw
    plain = bootstrap_intervals(counts, resamples=50, seed=5)
    assert bootstrap_intervals(counts, resamples=50, seed=5, block_frames=1) == plain
