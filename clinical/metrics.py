"""Segmentation metrics on class masks (plain NumPy), and validation over a recording.

Masks are integer arrays of class indices (any shape, same for truth and prediction).

Undefined values
----------------
A ratio whose denominator is zero is undefined, never 0 or 1: sensitivity of a class absent from
the truth, PPV of a class never predicted, Dice and IoU of a class absent from both truth and
prediction (an all-background frame has no burn Dice), specificity of a frame that is all one
class. Undefined values are NaN in arrays and `null` in JSON.
- pixel-pooled: null only when undefined with all frames' pixels pooled;
- per-frame mean: the mean over the frames where the ratio is defined, with `frames_defined`
  saying how many; null when it is defined on no frame;
- AUC (pixel-pooled only): null when the truth has no pixel of the class, or only that class;
- bootstrap intervals: resamples where the ratio is undefined are left out, `resamples_defined`
  says how many remain; null when none does.

AUC without keeping pixels
--------------------------
Per class, the probabilities of the truth-positive and truth-negative pixels are counted into
AUC_BINS = 65,536 equal bins over 0..1 (each 1/65,536, about 0.000015, wide; 1 MiB of counts
per target). Pairs that share a bin count as ties (one half), so the AUC is exact up to
`auc_error_bound`, reported beside it: half the share of positive-negative pairs in one bin.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from holoburn.clinical.depth import BURN_CLASSES, CLASS_NAMES, NUM_CLASSES

#: the ratios reported for each class and for any burn, all in 0..1, higher is better
RATIO_METRICS: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv", "dice", "iou")
#: one line each, in plain words, for reports
METRIC_MEANINGS: dict[str, str] = {
    "sensitivity": "share of the truly affected pixels that the model marked (recall)",
    "specificity": "share of the truly unaffected pixels that the model left unmarked",
    "ppv": "positive predictive value: share of the marked pixels that are truly affected (precision)",
    "npv": "negative predictive value: share of the unmarked pixels that are truly unaffected",
    "dice": "overlap of marked and true area, 2 x shared / (marked + true); 100 % = perfect",
    "iou": "intersection over union: shared / (marked or true); stricter than Dice",
    "auc": "area under the ROC curve from the model's probabilities; 0.5 = chance, 1 = perfect ranking",
}
ANY_BURN = "any_burn"
#: what metrics are computed for: each class, then any burn (classes 2-5 against 0-1)
TARGETS: tuple[str, ...] = (*CLASS_NAMES, ANY_BURN)
#: triage levels of clinical/triage.py, least urgent first
TRIAGE_LEVELS: tuple[str, ...] = ("none", "assess", "refer")

AUC_BINS = 65536

POOLED_ABOUT = "all pixels of all frames counted together, then the ratio taken (large burns weigh more)"
PER_FRAME_ABOUT = "the ratio taken on each frame, then averaged over the frames where it is defined (every frame weighs the same)"
UNDEFINED_ABOUT = (
    "a ratio with a zero denominator (e.g. Dice of a class absent from truth and prediction) is null, "
    "never 0 or 1; per-frame means use only the frames where it is defined (frames_defined)"
)


def confusion_matrix(truth, predicted, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(num_classes, num_classes) int64 counts; rows = truth, columns = prediction."""
    truth = np.asarray(truth).ravel().astype(np.int64)
    predicted = np.asarray(predicted).ravel().astype(np.int64)
    if truth.shape != predicted.shape:
        raise ValueError(f"truth and prediction differ in size: {truth.size} vs {predicted.size}")
    return np.bincount(truth * num_classes + predicted, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def dice_per_class(confusion: np.ndarray) -> np.ndarray:
    """Dice of each class from a confusion matrix; NaN where the class is absent in both."""
    tp = np.diag(confusion).astype(np.float64)
    denom = confusion.sum(0) + confusion.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def any_burn_dice(confusion: np.ndarray, burn_classes=BURN_CLASSES) -> float:
    """Dice of "any burn" (burn classes against the rest) from a confusion matrix."""
    burn = np.zeros(confusion.shape[0], bool)
    burn[list(burn_classes)] = True
    tp = confusion[np.ix_(burn, burn)].sum()
    fp = confusion[np.ix_(~burn, burn)].sum()
    fn = confusion[np.ix_(burn, ~burn)].sum()
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom else float("nan")


def dice_summary(confusion: np.ndarray) -> dict:
    """From a confusion matrix: any-burn Dice (NaN when undefined), Dice per class by name (None
    where a class is absent from truth and prediction), and the mean Dice of the burn depths that
    are present (None when none is)."""
    dice = dice_per_class(confusion)
    depth = [float(dice[c]) for c in BURN_CLASSES if not np.isnan(dice[c])]
    return {
        "any_burn_dice": any_burn_dice(confusion),
        "dice": {name: (None if np.isnan(d) else float(d)) for name, d in zip(CLASS_NAMES, dice)},
        "mean_depth_dice": float(np.mean(depth)) if depth else None,
    }


# ---------------------------------------------------------------------------------------------
# one-vs-rest counts and ratios


def outcome_counts(confusions: np.ndarray, burn_classes=BURN_CLASSES) -> np.ndarray:
    """True/false positives/negatives of each target, from confusion matrices.

    confusions: (..., C, C) int64, rows = truth. Returns (..., C + 1, 4) int64: one row per class
    (one against the rest) and a last row for any burn, columns TP, FP, FN, TN.
    """
    cm = np.asarray(confusions, dtype=np.int64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    truth = cm.sum(-1)
    predicted = cm.sum(-2)
    total = cm.sum((-2, -1))[..., None]
    per_class = np.stack([tp, predicted - tp, truth - tp, total - truth - predicted + tp], -1)
    burn = np.zeros(cm.shape[-1], bool)
    burn[list(burn_classes)] = True
    b_tp = cm[..., burn, :][..., burn].sum((-2, -1))
    b_fp = cm[..., ~burn, :][..., burn].sum((-2, -1))
    b_fn = cm[..., burn, :][..., ~burn].sum((-2, -1))
    b_tn = cm[..., ~burn, :][..., ~burn].sum((-2, -1))
    any_burn = np.stack([b_tp, b_fp, b_fn, b_tn], -1)[..., None, :]
    return np.concatenate([per_class, any_burn], -2)


def ratios(counts: np.ndarray) -> dict[str, np.ndarray]:
    """RATIO_METRICS from (..., 4) counts TP, FP, FN, TN (any numeric dtype); NaN where 0/0."""
    c = np.asarray(counts, dtype=np.float64)
    tp, fp, fn, tn = c[..., 0], c[..., 1], c[..., 2], c[..., 3]

    def safe(num, den):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)

    return {
        "sensitivity": safe(tp, tp + fn),
        "specificity": safe(tn, tn + fp),
        "ppv": safe(tp, tp + fp),
        "npv": safe(tn, tn + fn),
        "dice": safe(2 * tp, 2 * tp + fp + fn),
        "iou": safe(tp, tp + fp + fn),
    }


# ---------------------------------------------------------------------------------------------
# AUC from histograms


def probability_bins(probabilities: np.ndarray, bins: int = AUC_BINS, positive=None) -> np.ndarray:
    """Bin index (intp, flattened) of each probability: `bins` equal bins over 0..1.

    Values a little outside 0..1 (float error in summed softmax) fall into the end bins. With
    `positive` (bool, same size), positives are shifted by `bins`, ready for one bincount.
    """
    scaled = np.asarray(probabilities, dtype=np.float32).ravel() * np.float32(bins)  # exact for 2**k
    np.floor(scaled, out=scaled)
    np.clip(scaled, 0, bins - 1, out=scaled)
    if positive is not None:
        scaled += np.asarray(positive).ravel() * np.float32(bins)  # whole numbers < 2**24: exact
    return scaled.astype(np.intp)


def auc_from_histograms(positives: np.ndarray, negatives: np.ndarray) -> tuple[float, float]:
    """ROC AUC and its error bound from binned scores of positives and negatives (same bins).

    Pairs in one bin count one half, as ties do in the exact AUC; the bound is half their share.
    Returns (nan, nan) when either group is empty.
    """
    pos = np.asarray(positives, dtype=np.float64)
    neg = np.asarray(negatives, dtype=np.float64)
    pairs = pos.sum() * neg.sum()
    if pairs == 0:
        return float("nan"), float("nan")
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])  # negatives in lower bins
    same_bin = float((pos * neg).sum())
    auc = (float((pos * below).sum()) + 0.5 * same_bin) / pairs
    return auc, 0.5 * same_bin / pairs


# ---------------------------------------------------------------------------------------------
# burn size and triage


def tbsa_error(predicted_pct, truth_pct, *, referral_threshold_pct: float = 10.0) -> dict | None:
    """How far the %TBSA estimate is from the one the truth mask gives (same formula for both).

    predicted_pct, truth_pct: per-frame %TBSA (sequences of float, same length). Errors in %TBSA
    points (predicted minus truth). `threshold_agreement`: share of frames where both sides agree
    on "over the referral threshold". None when there are no frames.
    """
    pred = np.asarray(predicted_pct, dtype=np.float64)
    truth = np.asarray(truth_pct, dtype=np.float64)
    if pred.shape != truth.shape:
        raise ValueError(f"predicted and truth %TBSA differ in length: {pred.size} vs {truth.size}")
    if pred.size == 0:
        return None
    error = pred - truth
    over_pred, over_truth = pred > referral_threshold_pct, truth > referral_threshold_pct
    return {
        "frames": int(pred.size),
        "mean_absolute_error_points": float(np.abs(error).mean()),
        "mean_signed_error_points": float(error.mean()),
        "rmse_points": float(np.sqrt((error**2).mean())),
        "p95_absolute_error_points": float(np.percentile(np.abs(error), 95)),
        "max_absolute_error_points": float(np.abs(error).max()),
        "mean_truth_pct": float(truth.mean()),
        "referral_threshold_pct": referral_threshold_pct,
        "threshold_agreement": float((over_pred == over_truth).mean()),
        "missed_over_threshold": int((over_truth & ~over_pred).sum()),
        "false_over_threshold": int((over_pred & ~over_truth).sum()),
    }


def triage_agreement(predicted, truth, *, levels=TRIAGE_LEVELS) -> dict | None:
    """Agreement of per-frame triage levels from the prediction with those from the truth mask.

    predicted, truth: sequences of level names, same length. `levels`: every level, least urgent
    first; under-triage = prediction less urgent than truth. Cohen's kappa is null when chance
    agreement is already 1 (one level only on both sides). None when there are no frames.
    """
    predicted, truth = list(predicted), list(truth)
    if len(predicted) != len(truth):
        raise ValueError(f"predicted and truth triage differ in length: {len(predicted)} vs {len(truth)}")
    if not predicted:
        return None
    rank = {level: i for i, level in enumerate(levels)}
    unknown = sorted({str(v) for v in predicted + truth if v not in rank})
    if unknown:
        raise ValueError(f"unknown triage level(s) {', '.join(unknown)}; known: {', '.join(levels)}")
    table = np.zeros((len(levels), len(levels)), np.int64)
    for t, p in zip(truth, predicted):
        table[rank[t], rank[p]] += 1
    n = table.sum()
    observed = np.trace(table) / n
    expected = float((table.sum(1) * table.sum(0)).sum()) / n**2
    kappa = (observed - expected) / (1 - expected) if expected < 1 else None
    return {
        "frames": int(n),
        "levels": list(levels),
        "agreement": float(observed),
        "cohen_kappa": None if kappa is None else float(kappa),
        "under_triage": int(np.tril(table, -1).sum()),
        "over_triage": int(np.triu(table, 1).sum()),
        "table": {"rows": "truth", "columns": "prediction", "counts": table.tolist()},
    }


# ---------------------------------------------------------------------------------------------
# validation over a recording


def _json_number(x):
    x = float(x)
    return None if math.isnan(x) else x


class ValidationAccumulator:
    """Collects one recording's validation frame by frame; `summary()` gives metrics.json.

    Keeps per frame a (C, C) int64 confusion matrix and the optional latency, %TBSA and triage
    values; probabilities go into fixed-size histograms (see the module docstring, about 7 MiB in
    all), so memory grows by a few hundred bytes a frame whatever the frame size.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, burn_classes=BURN_CLASSES, triage_levels=TRIAGE_LEVELS):
        self.num_classes = num_classes
        self.burn_classes = tuple(burn_classes)
        self.triage_levels = tuple(triage_levels)
        self._frames: list[int] = []
        self._seen: set[int] = set()
        self._confusions: list[np.ndarray] = []
        self._latency_ms: list[float] = []
        self._tbsa: list[tuple[float, float]] = []
        self._triage: list[tuple[str, str]] = []
        # [target, truth negative / positive, bin]; target = class, or num_classes for any burn
        self._auc_histograms = np.zeros((num_classes + 1, 2, AUC_BINS), np.int64)
        self._frames_with_probabilities = 0
        self.missing_truth: list[int] = []
        self.extra_truth: list[int] = []
        self.not_evaluated: dict[str, list[int]] = defaultdict(list)

    def __len__(self) -> int:
        return len(self._frames)

    # -- feeding -------------------------------------------------------------------------------

    def add(
        self,
        frame_index: int,
        truth_mask,
        predicted_mask,
        probabilities=None,
        *,
        latency_ms: float | None = None,
        predicted_tbsa_pct: float | None = None,
        truth_tbsa_pct: float | None = None,
        predicted_triage: str | None = None,
        truth_triage: str | None = None,
    ) -> float:
        """Add one evaluated frame; returns its any-burn Dice (NaN when undefined).

        truth_mask, predicted_mask: (H, W) uint8 class indices. probabilities: optional (C, H, W)
        (or (1, C, H, W)) float softmax at the mask's size. latency_ms: the frame's end-to-end
        time, milliseconds. %TBSA and triage: the prediction's and the truth mask's values, both
        computed by the same functions (clinical/burn_size.py, clinical/triage.py; triage as the
        level name, e.g. "refer"); pairs with a side missing are left out of those statistics.
        """
        frame_index = int(frame_index)
        if frame_index in self._seen:
            raise ValueError(f"frame {frame_index} was added twice; each frame is evaluated once")
        truth = np.asarray(truth_mask)
        predicted = np.asarray(predicted_mask)
        if truth.shape != predicted.shape:
            raise ValueError(
                f"frame {frame_index}: truth mask {truth.shape} and prediction {predicted.shape} differ in size"
            )
        for name, mask in (("truth", truth), ("predicted", predicted)):
            low, high = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
            if low < 0 or high >= self.num_classes:
                raise ValueError(
                    f"frame {frame_index}: {name} mask holds class {high if high >= self.num_classes else low}; "
                    f"classes are 0..{self.num_classes - 1} in CLINICAL.md order"
                )
        for name, level in (("predicted", predicted_triage), ("truth", truth_triage)):
            if level is not None and level not in self.triage_levels:
                raise ValueError(
                    f"frame {frame_index}: {name} triage level {level!r} is not one of {', '.join(self.triage_levels)}"
                )
        confusion = confusion_matrix(truth, predicted, self.num_classes)
        if probabilities is not None:
            self._add_probabilities(frame_index, truth, probabilities)
        # checks passed: only now does the frame count
        self._frames.append(frame_index)
        self._seen.add(frame_index)
        self._confusions.append(confusion)
        if latency_ms is not None:
            self._latency_ms.append(float(latency_ms))
        if predicted_tbsa_pct is not None and truth_tbsa_pct is not None:
            self._tbsa.append((float(predicted_tbsa_pct), float(truth_tbsa_pct)))
        if predicted_triage is not None and truth_triage is not None:
            self._triage.append((str(predicted_triage), str(truth_triage)))
        return any_burn_dice(confusion, self.burn_classes)

    def _add_probabilities(self, frame_index: int, truth: np.ndarray, probabilities) -> None:
        probs = np.asarray(probabilities)
        if probs.ndim == 4 and probs.shape[0] == 1:
            probs = probs[0]
        if probs.shape != (self.num_classes, *truth.shape):
            raise ValueError(
                f"frame {frame_index}: probabilities are {probs.shape}, expected "
                f"{(self.num_classes, *truth.shape)} (classes, height, width at the mask's size); "
                "resize them to the frame before validating"
            )
        if not np.isfinite(probs).all():
            raise ValueError(f"frame {frame_index}: probabilities hold NaN or infinity")
        is_burn = np.zeros(self.num_classes, bool)
        is_burn[list(self.burn_classes)] = True
        any_burn_probability = probs[list(self.burn_classes)].sum(0)
        for target in range(self.num_classes + 1):
            if target == self.num_classes:
                p, positive = any_burn_probability, is_burn[truth]
            else:
                p, positive = probs[target], truth == target
            key = probability_bins(p, positive=positive)
            self._auc_histograms[target] += np.bincount(key, minlength=2 * AUC_BINS).reshape(2, AUC_BINS)
        self._frames_with_probabilities += 1

    def note_missing_truth(self, frame_index: int) -> None:
        """A processed frame had no ground-truth mask: not evaluated, listed in the summary."""
        self.missing_truth.append(int(frame_index))

    def note_extra_truth(self, frame_index: int) -> None:
        """A ground-truth mask had no processed frame: listed in the summary."""
        self.extra_truth.append(int(frame_index))

    def note_not_evaluated(self, frame_index: int, reason: str) -> None:
        """A frame the pipeline did not process (e.g. "decode_error"): listed by reason."""
        self.not_evaluated[str(reason)].append(int(frame_index))

    # -- results -------------------------------------------------------------------------------

    def frame_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(frame indices (N,), outcome counts (N, C + 1, 4)) in frame order."""
        order = np.argsort(self._frames, kind="stable")
        frames = np.asarray(self._frames, np.int64)[order]
        if not self._frames:
            return frames, np.zeros((0, self.num_classes + 1, 4), np.int64)
        cms = np.stack(self._confusions)[order]
        return frames, outcome_counts(cms, self.burn_classes)

    def summary(
        self,
        *,
        elapsed_s: float | None = None,
        resamples: int = 1000,
        confidence: float = 0.95,
        seed: int = 0,
        referral_threshold_pct: float = 10.0,
        block_frames: int = 1,
    ) -> dict:
        """The JSON-ready results (see the module docstring for undefined values).

        elapsed_s: wall time of the replay, seconds, for throughput. resamples / confidence /
        seed: the bootstrap over frames (percentile intervals; same seed, same intervals).
        block_frames: frames per block of the bootstrap (1: plain; more for video, whose
        neighbouring frames are alike).
        """
        frames, counts = self.frame_counts()
        classes = list(CLASS_NAMES) if self.num_classes == NUM_CLASSES else [f"class_{i}" for i in range(self.num_classes)]
        names = [*classes, ANY_BURN]
        pooled_counts = counts.sum(0)
        pooled = ratios(pooled_counts)
        per_frame = ratios(counts)

        pooled_out, per_frame_out = {}, {}
        for t, name in enumerate(names):
            auc, bound = auc_from_histograms(self._auc_histograms[t, 1], self._auc_histograms[t, 0])
            tp, fp, fn, tn = (int(v) for v in pooled_counts[t])
            entry = {m: _json_number(pooled[m][t]) for m in RATIO_METRICS}
            entry["auc"] = _json_number(auc)
            entry["auc_error_bound"] = _json_number(bound)
            entry["pixels"] = {"truth": tp + fn, "predicted": tp + fp, "tp": tp, "fp": fp, "fn": fn, "tn": tn}
            pooled_out[name] = entry

            mean_entry, defined_entry = {}, {}
            for m in RATIO_METRICS:
                values = per_frame[m][:, t]
                defined = ~np.isnan(values)
                mean_entry[m] = float(values[defined].mean()) if defined.any() else None
                defined_entry[m] = int(defined.sum())
            mean_entry["frames_defined"] = defined_entry
            per_frame_out[name] = mean_entry

        def split(d):
            return {"per_class": {n: d[n] for n in names[:-1]}, ANY_BURN: d[ANY_BURN]}

        confusion = np.stack(self._confusions).sum(0) if self._confusions else np.zeros(
            (self.num_classes, self.num_classes), np.int64)
        return {
            "schema": "holoburn.validation.v1",
            "classes": classes,
            "burn_classes": list(self.burn_classes),
            "frames": {
                "evaluated": int(len(frames)),
                "first": int(frames[0]) if len(frames) else None,
                "last": int(frames[-1]) if len(frames) else None,
                "missing_truth": sorted(self.missing_truth),
                "extra_truth": sorted(self.extra_truth),
                "not_evaluated": {k: sorted(v) for k, v in sorted(self.not_evaluated.items())},
            },
            "undefined_values": UNDEFINED_ABOUT,
            "pixel_pooled": {"about": POOLED_ABOUT, **split(pooled_out)},
            "per_frame_mean": {"about": PER_FRAME_ABOUT, **split(per_frame_out)},
            "confusion_matrix": {"rows": "truth", "columns": "prediction", "counts": confusion.tolist()},
            "auc": {
                "aggregation": "pixel_pooled",
                "frames_with_probabilities": self._frames_with_probabilities,
                "bins": AUC_BINS,
                "binning": f"probabilities counted in {AUC_BINS:,} equal bins (each {1 / AUC_BINS:.1e} wide); "
                "exact up to auc_error_bound",
                "any_burn_probability": "sum of the probabilities of classes " + ", ".join(map(str, self.burn_classes)),
            },
            "confidence_intervals": bootstrap_intervals(
                counts, resamples=resamples, confidence=confidence, seed=seed, names=names,
                block_frames=block_frames),
            "latency_ms": latency_summary(self._latency_ms),
            "throughput_fps": (len(frames) / elapsed_s) if elapsed_s else None,
            "elapsed_s": elapsed_s,
            "tbsa": tbsa_error([p for p, _ in self._tbsa], [t for _, t in self._tbsa],
                               referral_threshold_pct=referral_threshold_pct),
            "triage": triage_agreement([p for p, _ in self._triage], [t for _, t in self._triage],
                                       levels=self.triage_levels),
        }


def bootstrap_intervals(
    frame_counts: np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    names=TARGETS,
    chunk: int = 100,
    block_frames: int = 1,
) -> dict:
    """Percentile bootstrap over frames of every ratio, both aggregations.

    frame_counts: (N, T, 4) outcome counts per frame and target, in frame order. Each resample
    draws N frames with replacement (NumPy PCG64 seeded with `seed`); intervals are the
    (1 -/+ confidence) / 2 percentiles over the resamples where the ratio is defined.
    block_frames > 1: a moving-block bootstrap, runs of that many consecutive frames drawn
    together, because neighbouring video frames are alike and frame-by-frame resampling would
    give intervals that are too narrow. block_frames = 1 is the plain bootstrap.
    """
    counts = np.asarray(frame_counts, dtype=np.float64)
    n, targets = counts.shape[:2]
    block = max(1, min(int(block_frames), n)) if n else 1
    about = {
        "method": "bootstrap over frames, percentile interval" if block == 1 else
        f"moving-block bootstrap over frames (blocks of {block} consecutive frames), percentile interval",
        "block_frames": block,
        "resamples": resamples,
        "confidence": confidence,
        "seed": seed,
    }
    if n == 0:
        return {**about, "pixel_pooled": None, "per_frame_mean": None}
    per_frame = ratios(counts)  # each (N, T)
    per_frame_values = np.stack([np.nan_to_num(per_frame[m]) for m in RATIO_METRICS], -1)  # (N, T, M)
    per_frame_defined = np.stack([~np.isnan(per_frame[m]) for m in RATIO_METRICS], -1).astype(np.float64)

    rng = np.random.Generator(np.random.PCG64(seed))
    pooled_draws, mean_draws = [], []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        if block == 1:
            frames = rng.integers(0, n, (size, n))
        else:
            blocks = -(-n // block)
            starts = rng.integers(0, n - block + 1, (size, blocks))
            frames = (starts[:, :, None] + np.arange(block)).reshape(size, blocks * block)[:, :n]
        picks = frames + (np.arange(size) * n)[:, None]
        weights = np.bincount(picks.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)
        pooled = ratios(np.einsum("rn,ntk->rtk", weights, counts))
        pooled_draws.append(np.stack([pooled[m] for m in RATIO_METRICS], -1))  # (size, T, M)
        total = np.einsum("rn,ntm->rtm", weights, per_frame_values)
        used = np.einsum("rn,ntm->rtm", weights, per_frame_defined)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_draws.append(np.where(used > 0, total / np.where(used > 0, used, 1), np.nan))

    tail = (1 - confidence) / 2 * 100

    def intervals(draws):
        draws = np.concatenate(draws)  # (R, T, M)
        defined = (~np.isnan(draws)).sum(0)
        out = {}
        for t in range(targets):
            entry = {}
            for k, m in enumerate(RATIO_METRICS):
                column = draws[:, t, k]
                column = column[~np.isnan(column)]
                if column.size:
                    low, high = np.percentile(column, [tail, 100 - tail])
                    entry[m] = {"low": float(low), "high": float(high), "resamples_defined": int(defined[t, k])}
                else:
                    entry[m] = None
            out[names[t]] = entry
        return out

    return {**about, "pixel_pooled": intervals(pooled_draws), "per_frame_mean": intervals(mean_draws)}


def percentiles(values_ms, qs=(50, 90, 95, 99)) -> dict:
    """{"n", "p50", "p90", "p95", "p99", "max"} of millisecond values, rounded to microseconds;
    the percentiles and max are None when there are no values. The one percentile helper of
    holoburn (run summaries, lanes, benchmarks, validation)."""
    values = np.asarray(values_ms, dtype=np.float64)
    if values.size == 0:
        return {"n": 0, **{f"p{q}": None for q in qs}, "max": None}
    points = np.percentile(values, list(qs))
    return {"n": int(values.size), **{f"p{q}": round(float(v), 3) for q, v in zip(qs, points)},
            "max": round(float(values.max()), 3)}


def latency_summary(latency_ms) -> dict | None:
    """percentiles(), the mean and a 40-bin histogram, in milliseconds; None if empty."""
    values = np.asarray(latency_ms, dtype=np.float64)
    if values.size == 0:
        return None
    counts, edges = np.histogram(values, bins=40)
    return {**percentiles(values), "mean": float(values.mean()),
            "histogram": {"edges_ms": edges.tolist(), "counts": counts.tolist()}}


# ---------------------------------------------------------------------------------------------
# comparisons between runs

AGGREGATIONS: tuple[str, ...] = ("pixel_pooled", "per_frame_mean")
COMPARED_METRICS: tuple[str, ...] = (*RATIO_METRICS, "auc")


def flat_metrics(metrics: dict) -> dict[str, float | None]:
    """Every comparable ratio of a summary, keyed "aggregation.target.metric" (e.g.
    "pixel_pooled.any_burn.dice"), in a fixed order."""
    out = {}
    for aggregation in AGGREGATIONS:
        block = metrics.get(aggregation) or {}
        targets = {**(block.get("per_class") or {}), ANY_BURN: block.get(ANY_BURN) or {}}
        for target, entry in targets.items():
            for m in COMPARED_METRICS:
                if m in entry:
                    out[f"{aggregation}.{target}.{m}"] = entry[m]
    return out


def baseline_deltas(metrics: dict, baseline: dict, threshold_points: float = 2.0) -> list[dict]:
    """Every metric present in both runs, with its change in percentage points (0..100 scale).

    `dropped` is true where the metric fell by more than threshold_points. Changes are rounded
    to 1e-9 points so a drop of exactly the threshold is not flagged through rounding noise.
    Metrics null on either side are listed with `delta_points` null and never flagged.
    """
    now, before = flat_metrics(metrics), flat_metrics(baseline)
    rows = []
    for key, old in before.items():
        if key not in now:
            continue
        new = now[key]
        delta = None if old is None or new is None else round((new - old) * 100, 9)
        rows.append({
            "metric": key,
            "baseline": old,
            "current": new,
            "delta_points": delta,
            "dropped": delta is not None and -delta > threshold_points,
        })
    return rows


def compare_to_baseline(metrics: dict, baseline: dict, threshold_points: float = 2.0) -> list[dict]:
    """The drift gate: metrics that dropped by more than threshold_points percentage points
    against the stored baseline summary, largest drop first. Empty list = no drift."""
    drops = [r for r in baseline_deltas(metrics, baseline, threshold_points) if r["dropped"]]
    for r in drops:
        r["drop_points"] = -r["delta_points"]
    return sorted(drops, key=lambda r: -r["drop_points"])


def compare_precisions(metrics_by_precision: dict, *, reference: str = "fp32", gate_points: float = 1.0) -> dict:
    """Side-by-side metrics of one recording run at several precisions, with deltas vs fp32.

    metrics_by_precision: {"fp32": summary, "fp16": summary, ...}. Each row holds every
    precision's value and, for the others, `delta_points` (percentage points) and
    `beyond_gate` (dropped more than gate_points, the engines' accuracy gate). Latency
    percentiles follow as rows with `delta_ms`.
    """
    if reference not in metrics_by_precision:
        raise ValueError(
            f"precision comparison needs the {reference} run as reference; got {', '.join(metrics_by_precision)}"
        )
    precisions = [reference] + [p for p in metrics_by_precision if p != reference]
    flats = {p: flat_metrics(metrics_by_precision[p]) for p in precisions}
    rows = []
    for key, ref in flats[reference].items():
        row = {"metric": key, "values": {}, "delta_points": {}, "beyond_gate": {}}
        for p in precisions:
            value = flats[p].get(key)
            row["values"][p] = value
            if p != reference:
                delta = None if value is None or ref is None else round((value - ref) * 100, 9)
                row["delta_points"][p] = delta
                row["beyond_gate"][p] = delta is not None and -delta > gate_points
        rows.append(row)
    latency_rows = []
    for q in ("p50", "p95", "p99"):
        values = {p: (metrics_by_precision[p].get("latency_ms") or {}).get(q) for p in precisions}
        ref = values[reference]
        latency_rows.append({
            "metric": f"latency_ms.{q}",
            "values": values,
            "delta_ms": {p: None if values[p] is None or ref is None else values[p] - ref for p in precisions[1:]},
        })
    return {
        "reference": reference,
        "precisions": precisions,
        "gate_points": gate_points,
        "rows": rows,
        "latency": latency_rows,
        "beyond_gate": sorted({p for r in rows for p, b in r["beyond_gate"].items() if b}),
    }
