"""Accuracy gate: a converted model is accepted only if no burn class loses more than the limit.

Every candidate (FP16, INT8, or an engine that can run here) and the FP32 reference segment the
same held-out frames through the pipeline's own preprocessing (`prepare_input` -> model -> argmax
-> `restore_mask`); each prediction is scored against the ground-truth mask at frame size.
For every burn class and for any-burn the gate compares Dice and sensitivity (recall: the share
of truly burned pixels found) with FP32; a drop of more than `max_drop_points` (percentage
points, default 1.0) in any of them refuses the candidate. A burn class absent from the held-out
truth cannot be checked: its row says "untested", the verdict names it as not tested (never as a
loss), and it refuses the candidate too unless the strategy's require_all_classes is off, so an
incomplete set never passes by default. Background and healthy skin are reported, not gated.

Frames whose truth holds no burn at all (real photographs of no burn, scenes without skin) are
negatives: beside the per-class rows the gate compares the share of their pixels each model calls
burn, and a candidate that calls more than `max_drop_points` points more of them burn than FP32
is refused (`false_burn_on_negatives`), however small their weight in the pooled Dice.

A held-out set given as families ({name: pairs}, e.g. the generated one: contact, varied,
independent scenes and photographs) is also judged family by family: a loss beyond the limit in
any one family refuses the candidate, even where the pooled figures hide it. (A class absent from
one family is not a failure of that family; the pooled set must hold every class.)

Held-out sets are directories: frames as a video (e.g. `frames.mp4`), a `frames/` folder or image
files (read by frames.py), plus a `masks/` folder of single-channel PNG class masks (uint8 class
indices) in the same order as the frames.

Layering inside engines/: gate imports card.py, frames.py and cache.py (to write its report);
precision.py calls it, and it never imports precision.py or quantize.py (a strategy is passed in).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from holoburn.clinical.depth import BURN_CLASSES, CLASS_NAMES
from holoburn.clinical.errors import BadInput
from holoburn.clinical.metrics import any_burn_dice, confusion_matrix, dice_per_class
from holoburn.engines.card import ModelCard
from holoburn.engines.frames import FrameSetError, iter_frames_rgb
from holoburn.processing.preprocess import prepare_input, restore_mask


class HoldoutError(BadInput):
    """The held-out set is missing, empty or inconsistent."""


def load_labelled_set(path: str | Path, limit: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Held-out (frame (H, W, 3) uint8 RGB, mask (H, W) uint8) pairs from a directory (see module doc).

    limit: keep that many evenly spaced pairs.
    """
    import cv2

    path = Path(path)
    masks_dir = path / "masks"
    if not masks_dir.is_dir():
        raise HoldoutError(f"held-out set {path} has no masks/ folder (ground-truth class masks as PNG)")
    mask_files = sorted(p for p in masks_dir.iterdir() if p.suffix.lower() == ".png")
    try:
        frames = list(iter_frames_rgb(path))
    except FrameSetError as exc:
        raise HoldoutError(f"held-out set {path}: {exc}") from None
    if len(frames) != len(mask_files):
        raise HoldoutError(f"held-out set {path}: {len(frames)} frames but {len(mask_files)} masks in {masks_dir}; give one mask per frame, in frame order")
    pairs = []
    for frame, mask_file in zip(frames, mask_files):
        mask = cv2.imread(str(mask_file), cv2.IMREAD_UNCHANGED)
        if mask is None or mask.ndim != 2:
            raise HoldoutError(f"mask {mask_file} is not a single-channel PNG of class indices (uint8, one value per pixel)")
        if mask.shape != frame.shape[:2]:
            raise HoldoutError(f"mask {mask_file} is {mask.shape[1]}x{mask.shape[0]} but its frame is {frame.shape[1]}x{frame.shape[0]}")
        pairs.append((frame, mask.astype(np.uint8)))
    if not pairs:
        raise HoldoutError(f"held-out set {path} is empty")
    if limit and len(pairs) > limit:
        pairs = [pairs[int(i)] for i in np.linspace(0, len(pairs) - 1, limit).round()]
    return pairs


def burn_class_indices(card: ModelCard) -> list[int]:
    """Indices in the card's class list of the burn depths (clinical.depth.BURN_CLASSES, by name)."""
    names = [CLASS_NAMES[i] for i in BURN_CLASSES]
    indices = [card.classes.index(n) for n in names if n in card.classes]
    if not indices:
        raise HoldoutError(f"card {card.path} lists no burn class ({', '.join(names)}); cannot gate it")
    return indices


@dataclass
class Scores:
    """Per-class Dice and sensitivity (0..1, NaN where undefined) of one model on the held-out set."""

    confusion: np.ndarray
    burn_classes: list[int]
    agreement: float = float("nan")  # share of pixels whose class equals the FP32 prediction
    negative_pixels: int = 0  # pixels of the frames whose truth holds no burn
    negative_burn_pixels: int = 0  # ... of them called burn

    @property
    def false_burn_on_negatives(self) -> float:
        return self.negative_burn_pixels / self.negative_pixels if self.negative_pixels else float("nan")

    @property
    def dice(self) -> np.ndarray:
        return dice_per_class(self.confusion)

    @property
    def sensitivity(self) -> np.ndarray:
        tp = np.diag(self.confusion).astype(np.float64)
        truth = self.confusion.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(truth > 0, tp / truth, np.nan)

    @property
    def any_burn_dice(self) -> float:
        return any_burn_dice(self.confusion, self.burn_classes)

    @property
    def any_burn_sensitivity(self) -> float:
        burn = np.zeros(self.confusion.shape[0], bool)
        burn[self.burn_classes] = True
        truth = self.confusion[burn].sum()
        return float(self.confusion[np.ix_(burn, burn)].sum() / truth) if truth else float("nan")


def segment(infer: Callable[[np.ndarray], np.ndarray], frame: np.ndarray, card: ModelCard) -> np.ndarray:
    """One frame through the pipeline's geometry: (H, W, 3) uint8 RGB -> (H, W) uint8 class mask."""
    model_input, box = prepare_input(frame, card.input_size, card.mean, card.std)
    logits = np.asarray(infer(model_input))
    return restore_mask(logits[0].argmax(0).astype(np.uint8), box)


def evaluate(infers: dict[str, Callable[[np.ndarray], np.ndarray]], samples: Iterable, card: ModelCard, reference: str = "fp32") -> dict[str, Scores]:
    """Score every model in `infers` (label -> (1,3,S,S) float32 -> (1,C,S,S) logits) on `samples`."""
    n = card.num_classes
    confusion = {label: np.zeros((n, n), np.int64) for label in infers}
    agree = {label: 0 for label in infers}
    called_burn = {label: 0 for label in infers}
    pixels = negatives = 0
    burn = burn_class_indices(card)
    for frame, truth in samples:
        predictions = {label: segment(infer, frame, card) for label, infer in infers.items()}
        negative = not np.isin(truth, burn).any()
        for label, predicted in predictions.items():
            confusion[label] += confusion_matrix(truth, predicted, n)
            if reference in predictions:
                agree[label] += int((predicted == predictions[reference]).sum())
            if negative:
                called_burn[label] += int(np.isin(predicted, burn).sum())
        pixels += truth.size
        negatives += truth.size if negative else 0
    if pixels == 0:
        raise HoldoutError("the held-out set is empty")
    return {
        label: Scores(confusion[label], burn, agree[label] / pixels if reference in infers else float("nan"),
                      negatives, called_burn[label])
        for label in infers
    }


def pooled(parts: list[Scores]) -> Scores:
    """Scores of several sets as of one: confusion and negatives added, agreement weighted by pixels."""
    pixels = [int(p.confusion.sum()) for p in parts]
    agreement = sum(p.agreement * n for p, n in zip(parts, pixels)) / sum(pixels) if sum(pixels) else float("nan")
    return Scores(sum(p.confusion for p in parts), parts[0].burn_classes, agreement,
                  sum(p.negative_pixels for p in parts), sum(p.negative_burn_pixels for p in parts))


def _points(value: float) -> float:
    return value * 100.0


@dataclass
class GateRow:
    name: str
    gated: bool
    reference_dice: float
    candidate_dice: float
    reference_sensitivity: float
    candidate_sensitivity: float
    status: str  # "pass", "FAIL", "untested" (a gated class absent from the held-out truth), "info"

    @property
    def dice_delta(self) -> float:
        return self.candidate_dice - self.reference_dice

    @property
    def sensitivity_delta(self) -> float:
        return self.candidate_sensitivity - self.reference_sensitivity


@dataclass
class GateReport:
    """One candidate against FP32: rows per class plus any-burn, and the verdict."""

    candidate: str
    max_drop_points: float
    rows: list[GateRow]
    agreement: float
    frames: int
    meta: dict = field(default_factory=dict)
    require_all_classes: bool = True  # an untested burn class refuses the candidate
    # share of the negatives' pixels called burn: (fp32, candidate); None without negatives
    negatives: tuple[float, float] | None = None
    families: dict = field(default_factory=dict)  # family name -> its own GateReport

    def more_false_burn(self) -> bool:
        """The candidate calls more than the limit more of the negatives' pixels burn than FP32."""
        return self.negatives is not None and \
            self.negatives[1] - self.negatives[0] > self.max_drop_points / 100.0 + 1e-12

    @property
    def passed(self) -> bool:
        return not self.failures()

    def lost(self) -> list[str]:
        """Classes that lost more than the limit (and false_burn_on_negatives, gained beyond it)."""
        return [r.name for r in self.rows if r.status == "FAIL"] + \
            (["false_burn_on_negatives"] if self.more_false_burn() else [])

    def untested(self) -> list[str]:
        """Gated classes (or any-burn) absent from the held-out truth: nothing could be measured."""
        return [r.name for r in self.rows if r.status == "untested"]

    def failures(self) -> list[str]:
        """What refuses the candidate: the losses (pooled, then per family), and the untested
        classes when all are required."""
        families = [f"{name}: {lost}" for name, sub in self.families.items() for lost in sub.lost()]
        return self.lost() + families + (self.untested() if self.require_all_classes else [])

    def losses(self) -> list[str]:
        """What was lost beyond the limit, in sentences (empty: nothing)."""
        limit = f"{self.max_drop_points:.2f} points"
        said = []
        classes = [r.name for r in self.rows if r.status == "FAIL"]
        if classes:
            said.append(f"Lost more than {limit} of Dice or sensitivity on {', '.join(classes)}.")
        if self.more_false_burn():
            ref, cand = self.negatives
            said.append(f"Called {_points(cand - ref):.2f} points more of the no-burn frames' pixels burn "
                        f"(false_burn_on_negatives; at most {limit}).")
        return said

    def reason(self) -> str:
        """The verdict in words: the classes that lost more than the limit, those within it, the
        families that lost on their own, and the classes that could not be tested (never counted
        as a loss)."""
        limit = f"{self.max_drop_points:.2f} points"
        within = [r.name for r in self.rows if r.status == "pass"]
        said = self.losses()
        if within:
            said.append(f"Within {limit} on {', '.join(within)}.")
        for name, sub in self.families.items():
            if sub.lost():
                said.append(f"On the {name} frames alone ({sub.frames}): {' '.join(sub.losses())}")
        if self.untested():
            consequence = ("an untested burn class refuses the candidate" if self.require_all_classes
                           else "accepted without them (require_all_classes is off)")
            said.append(f"Not tested (absent from the held-out masks, so no loss could be measured): "
                        f"{', '.join(self.untested())}; {consequence}.")
        return " ".join(said)

    def summary(self) -> dict:
        worst = min((min(r.dice_delta, r.sensitivity_delta) for r in self.rows if r.gated and r.status != "untested"), default=float("nan"))
        return {
            "candidate": self.candidate,
            "passed": self.passed,
            "max_drop_points": self.max_drop_points,
            "worst_delta_points": _points(worst),
            "failures": self.failures(),
            "lost": self.lost(),
            "untested": self.untested(),
        }

    def to_markdown(self) -> str:
        def fmt(v: float) -> str:
            return "n/a" if v is None or math.isnan(v) else f"{_points(v):.2f}"

        def delta(v: float) -> str:
            return "n/a" if v is None or math.isnan(v) else f"{_points(v):+.2f}"

        verdict = "ACCEPTED" if self.passed else "REFUSED"
        lines = [
            f"### Accuracy gate: {self.candidate} vs fp32: {verdict}",
            "",
            f"Held-out frames: {self.frames}; limit: a burn class (or any-burn) may lose at most "
            f"{self.max_drop_points:.2f} points of Dice or sensitivity; pixel agreement with fp32: {fmt(self.agreement)} %.",
            "",
            f"| class | Dice fp32 | Dice {self.candidate} | delta | Sens fp32 | Sens {self.candidate} | delta | gate |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.name} | {fmt(r.reference_dice)} | {fmt(r.candidate_dice)} | {delta(r.dice_delta)} | "
                f"{fmt(r.reference_sensitivity)} | {fmt(r.candidate_sensitivity)} | {delta(r.sensitivity_delta)} | {r.status} |"
            )
        if self.negatives is not None:
            ref, cand = self.negatives
            lines += ["", f"Negatives (frames whose truth holds no burn): fp32 calls {fmt(ref)} % of their pixels burn, "
                          f"{self.candidate} {fmt(cand)} % ({delta(cand - ref)}; more than {self.max_drop_points:.2f} "
                          f"points more refuses): {'FAIL' if self.more_false_burn() else 'pass'}."]
        if self.families:
            lines += ["", "| family | frames | worst delta (Dice or sensitivity) | gate |", "|---|---:|---:|---|"]
            for name, sub in self.families.items():
                worst = sub.summary()["worst_delta_points"]
                lines.append(f"| {name} | {sub.frames} | {'n/a' if math.isnan(worst) else f'{worst:+.2f}'} | "
                             f"{'FAIL: ' + ', '.join(sub.lost()) if sub.lost() else 'pass'} |")
        if not self.passed or self.untested():
            lines += ["", f"{verdict}: {self.reason()}"]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        def num(v):
            return None if v is None or math.isnan(v) else round(_points(v), 4)

        return {
            "candidate": self.candidate,
            "reference": "fp32",
            "passed": self.passed,
            "reason": self.reason(),
            "untested": self.untested(),
            "max_drop_points": self.max_drop_points,
            "frames": self.frames,
            "pixel_agreement_pct": num(self.agreement),
            "false_burn_on_negatives_pct": None if self.negatives is None else
            {"fp32": num(self.negatives[0]), "candidate": num(self.negatives[1]),
             "status": "FAIL" if self.more_false_burn() else "pass"},
            "rows": [
                {
                    "class": r.name,
                    "gated": r.gated,
                    "dice_fp32": num(r.reference_dice),
                    "dice": num(r.candidate_dice),
                    "dice_delta": num(r.dice_delta),
                    "sensitivity_fp32": num(r.reference_sensitivity),
                    "sensitivity": num(r.candidate_sensitivity),
                    "sensitivity_delta": num(r.sensitivity_delta),
                    "status": r.status,
                }
                for r in self.rows
            ],
            "families": {name: {"frames": sub.frames, "passed": not sub.lost(), "lost": sub.lost(),
                                **{key: value for key, value in sub.to_json().items()
                                   if key in ("rows", "false_burn_on_negatives_pct")}}
                         for name, sub in self.families.items()},
            "meta": self.meta,
        }

    def write(self, base: str | Path) -> tuple[Path, Path]:
        """Write `<base>.gate.md` and `<base>.gate.json` (atomically); return both paths."""
        from holoburn.processing.files import atomic_write

        base = Path(base)
        md = atomic_write(base.with_name(base.name + ".gate.md"), self.to_markdown().encode())
        js = atomic_write(base.with_name(base.name + ".gate.json"), json.dumps(self.to_json(), indent=1, default=str).encode())
        return md, js


def compare(card: ModelCard, reference: Scores, candidate: Scores, label: str, max_drop_points: float = 1.0, require_all_classes: bool = True, frames: int = 0) -> GateReport:
    """The gate's verdict for `candidate` against `reference` (see module doc)."""
    limit = max_drop_points / 100.0
    rows = []
    burn = set(reference.burn_classes)
    truth_present = reference.confusion.sum(1) > 0

    def status(gated, present, ref_d, cand_d, ref_s, cand_s):
        if not gated:
            return "info"
        if not present:
            return "untested"
        drops = [r - c for r, c in ((ref_d, cand_d), (ref_s, cand_s)) if not (math.isnan(r) or math.isnan(c))]
        return "FAIL" if any(d > limit + 1e-12 for d in drops) else "pass"

    for index, name in enumerate(card.classes):
        values = (reference.dice[index], candidate.dice[index], reference.sensitivity[index], candidate.sensitivity[index])
        gated = index in burn
        rows.append(GateRow(name, gated, *values, status(gated, bool(truth_present[index]), *values)))
    any_values = (reference.any_burn_dice, candidate.any_burn_dice, reference.any_burn_sensitivity, candidate.any_burn_sensitivity)
    any_present = bool(truth_present[list(burn)].any())
    rows.append(GateRow("any_burn", True, *any_values, status(True, any_present, *any_values)))
    negatives = (reference.false_burn_on_negatives, candidate.false_burn_on_negatives) if reference.negative_pixels else None
    return GateReport(label, max_drop_points, rows, candidate.agreement, frames, require_all_classes=require_all_classes,
                      negatives=negatives)


#: ONNX Runtime's pass (1.32) that quantizes the weights of a float convolution reading an INT8 tensor
WEIGHT_QUANTIZATION = "WeightBiasQuantization"


def onnx_infer(path: str | Path, threads: int | None = None, *,
               float_layers_in_float: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """An ONNX Runtime CPU session on `path` as a function (1,3,S,S) float32 -> (1,C,S,S) float32.
    float_layers_in_float=False: ONNX Runtime's own CPU graph, as its INT8 runs would have it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # ONNX Runtime's WeightBiasQuantization pass would give INT8 weights to a convolution kept in
    # float that reads an INT8 tensor (card.sensitive_layers); TensorRT runs such a layer in float,
    # so the gate must too, or it judges another model than the one deployed
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=[WEIGHT_QUANTIZATION] if float_layers_in_float else [])
    name = session.get_inputs()[0].name

    def infer(batch: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: np.ascontiguousarray(batch, np.float32)})[0], np.float32)

    return infer


def run_gate(card: ModelCard, models: dict, holdout: Sequence, *, strategy=None, max_drop_points: float | None = None, threads: int | None = None, reference: str = "fp32") -> GateReport:
    """Gate the one non-reference entry of `models` (label -> ONNX path or infer function) against FP32.

    holdout: (frame (H, W, 3) uint8 RGB, mask (H, W) uint8) pairs, or families of them
    ({name: pairs}): judged pooled and family by family (module doc).
    """
    families = {name: list(pairs) for name, pairs in holdout.items()} if isinstance(holdout, dict) else {"": list(holdout)}
    families = {name: pairs for name, pairs in families.items() if pairs}
    if not families:
        raise HoldoutError("the held-out set is empty: pass --holdout DIR with frames and masks/")
    infers = {label: (m if callable(m) else onnx_infer(m, threads)) for label, m in models.items()}
    candidates = [label for label in infers if label != reference]
    if reference not in infers or len(candidates) != 1:
        raise ValueError(f"run_gate needs {reference!r} and exactly one candidate, got {list(infers)}")
    per_family = {name: evaluate(infers, pairs, card, reference) for name, pairs in families.items()}
    scores = {label: pooled([found[label] for found in per_family.values()]) for label in infers}
    limit = max_drop_points if max_drop_points is not None else (strategy.max_drop_points if strategy else 1.0)
    require_all = strategy.require_all_classes if strategy else True
    frames = sum(len(pairs) for pairs in families.values())
    report = compare(card, scores[reference], scores[candidates[0]], candidates[0], limit, require_all, frames)
    if len(families) > 1:
        report.families = {name: compare(card, found[reference], found[candidates[0]], candidates[0], limit, False,
                                         len(families[name])) for name, found in per_family.items()}
    clean = lambda values: [None if math.isnan(v) else round(float(v), 6) for v in values]  # noqa: E731  (strict JSON)
    report.meta["reference_scores"] = {"dice": clean(scores[reference].dice), "sensitivity": clean(scores[reference].sensitivity)}
    return report
