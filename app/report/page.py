"""The validation report: one self-contained HTML page a clinician can read offline.

Everything is inline: CSS in the page, plots and example frames as base64 PNG data URIs; no
script, font or link leaves the file. Plots are drawn with matplotlib's Agg canvas directly (no
pyplot, so no global backend is switched). Numbers come from `ValidationAccumulator.summary()`.
"""
from __future__ import annotations

import base64
import heapq
import html
import io
import math
from datetime import datetime, timezone
from pathlib import Path
from string import Template
from typing import NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from holoburn.clinical.depth import BURN_CLASSES, CLASS_COLOURS_RGB, CLASS_NAMES, LABELS, NUM_CLASSES
from holoburn.clinical.metrics import (
    ANY_BURN,
    METRIC_MEANINGS,
    RATIO_METRICS,
    any_burn_dice,
    baseline_deltas,
    confusion_matrix,
)
from holoburn.clinical.overlay import tint

DECISION_SUPPORT = "Decision support, not diagnosis: a clinician makes every clinical decision."

#: the report's sections, in order (tests check every one is there)
SECTION_TITLES: tuple[str, ...] = (
    "Intended use",
    "At a glance",
    "Frames evaluated",
    "Any burn (burn against no burn)",
    "Each burn depth",
    "Confusion matrix",
    "Dice and sensitivity by class",
    "Each image and each case",
    "Burn size (%TBSA) and triage",
    "Speed",
    "Precision comparison",
    "Baseline comparison (drift check)",
    "Worst frames",
    "Model card",
    "Reproduce this report",
    "What the numbers mean",
)

METRIC_TITLES = {
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "dice": "Dice",
    "iou": "IoU",
    "auc": "AUC",
}
AGGREGATION_TITLES = {"pixel_pooled": "pixel-pooled", "per_frame_mean": "per-frame mean"}


# ---------------------------------------------------------------------------------------------
# choosing the worst frames


class BurnErrors(NamedTuple):
    """One frame's burn errors, in pixels of the frame (the model's own classes, as validated).

    truth_burn: burn of any depth in the ground truth. missed: of those, called background or
    healthy skin. wrong_depth: of those, called burn of another depth. false_alarm: called burn
    where the ground truth has none. dice: any-burn Dice (NaN when neither side has burn).
    """

    truth_burn: int
    missed: int
    wrong_depth: int
    false_alarm: int
    dice: float

    @property
    def burn_wrong(self) -> int:
        """Burn pixels of the truth the model missed or gave another depth."""
        return self.missed + self.wrong_depth


def burn_errors(truth_mask, predicted_mask, burn_classes=BURN_CLASSES) -> BurnErrors:
    """truth_mask, predicted_mask: (H, W) uint8 class indices (CLINICAL.md order)."""
    confusion = confusion_matrix(truth_mask, predicted_mask, NUM_CLASSES)
    burn = np.zeros(NUM_CLASSES, bool)
    burn[list(burn_classes)] = True
    in_burn = confusion[np.ix_(burn, burn)]
    return BurnErrors(truth_burn=int(confusion[burn].sum()),
                      missed=int(confusion[np.ix_(burn, ~burn)].sum()),
                      wrong_depth=int(in_burn.sum() - np.trace(in_burn)),
                      false_alarm=int(confusion[np.ix_(~burn, burn)].sum()),
                      dice=any_burn_dice(confusion, burn_classes))


class Example(NamedTuple):
    """A frame kept for the report: frame_rgb (H, W, 3) uint8, masks (H, W) uint8, its errors."""

    frame_index: int
    frame_rgb: np.ndarray
    truth_mask: np.ndarray
    predicted_mask: np.ndarray
    errors: BurnErrors


class _Largest:
    """The `keep` examples with the largest score, in bounded memory (a min-heap whose root is
    the least bad kept frame). Ties keep the earlier frame."""

    def __init__(self, keep: int):
        self.keep = keep
        self._heap: list = []  # (score, -frame_index, example)

    def offer(self, score: int, frame_index: int, example) -> bool:
        """example: a callable making the Example, called only when the frame is kept."""
        key = (score, -int(frame_index))
        if self.keep <= 0 or (len(self._heap) == self.keep and key <= self._heap[0][:2]):
            return False
        if len(self._heap) < self.keep:
            heapq.heappush(self._heap, (*key, example()))
        else:
            heapq.heapreplace(self._heap, (*key, example()))
        return True

    def worst_first(self) -> list[Example]:
        return [item[2] for item in sorted(self._heap, key=lambda item: (-item[0], -item[1]))]


class WorstFrames:
    """The frames a reader should look at, fed one assessed frame at a time:

    - `burns_most_wrong()`: frames with burn in the truth, most burn pixels missed or given the
      wrong depth first;
    - `false_alarms()`: frames with burn called where the truth has none (frames without any
      burn included), most such pixels first;
    - `not_assessable`: frames the pipeline declared not assessable. They got no numbers and no
      triage, so they are in neither list; kept here by reason with the burn their truth holds.

    Each list keeps at most `keep` frames, each copied once when kept (callers reuse buffers).
    """

    def __init__(self, keep: int = 6):
        self.keep = keep
        self._burns = _Largest(keep)
        self._false_alarms = _Largest(keep)
        self.not_assessable: dict[str, list[tuple[int, int]]] = {}  # reason -> [(frame, truth burn pixels)]

    def offer(self, frame_index: int, frame_rgb, truth_mask, predicted_mask) -> BurnErrors:
        """Consider one assessed frame; returns its errors."""
        errors = burn_errors(truth_mask, predicted_mask)
        copied: list[Example] = []

        def example() -> Example:
            if not copied:
                copied.append(Example(int(frame_index), np.array(frame_rgb), np.array(truth_mask),
                                      np.array(predicted_mask), errors))
            return copied[0]

        if errors.truth_burn and errors.burn_wrong:
            self._burns.offer(errors.burn_wrong, frame_index, example)
        if errors.false_alarm:
            self._false_alarms.offer(errors.false_alarm, frame_index, example)
        return errors

    def note_not_assessable(self, frame_index: int, reason: str, truth_mask) -> None:
        truth_burn = int(np.isin(np.asarray(truth_mask), list(BURN_CLASSES)).sum())
        self.not_assessable.setdefault(str(reason), []).append((int(frame_index), truth_burn))

    def burns_most_wrong(self) -> list[Example]:
        return self._burns.worst_first()

    def false_alarms(self) -> list[Example]:
        return self._false_alarms.worst_first()

    def summary(self) -> dict:
        """The lists as metrics.json gives them (frame indices and pixel counts, no pictures)."""
        def rows(examples):
            return [{"frame": e.frame_index, **{k: v for k, v in e.errors._asdict().items() if k != "dice"},
                     "any_burn_dice": None if math.isnan(e.errors.dice) else round(e.errors.dice, 4)}
                    for e in examples]

        return {"burns_most_wrong": rows(self.burns_most_wrong()), "false_alarms": rows(self.false_alarms()),
                "not_assessable": {reason: [{"frame": f, "truth_burn": b} for f, b in frames]
                                   for reason, frames in self.not_assessable.items()}}


# ---------------------------------------------------------------------------------------------
# small formatting helpers

_esc = html.escape


def _percent(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<span class="undefined" title="undefined: zero denominator">undefined</span>'
    return f"{value * 100:.{digits}f}&nbsp;%"


def _decimal(value) -> str:
    if value is None:
        return '<span class="undefined" title="undefined: no positive or no negative pixel">undefined</span>'
    return f"{value:.3f}"


def _interval(ci) -> str:
    if not ci:
        return '<span class="undefined">undefined</span>'
    return f"{ci['low'] * 100:.1f} to {ci['high'] * 100:.1f}&nbsp;%"


def _number(value, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return '<span class="undefined">not given</span>'
    return f"{value:,.{digits}f}{'&nbsp;' + unit if unit else ''}"


def _frame_list(frames, limit: int = 40) -> str:
    if not frames:
        return "none"
    shown = ", ".join(str(f) for f in frames[:limit])
    return shown + (f" and {len(frames) - limit} more" if len(frames) > limit else "")


def _label(target: str) -> str:
    return "any burn" if target == ANY_BURN else LABELS.get(target, target.replace("_", " "))


def _metric_label(key: str) -> str:
    """"pixel_pooled.any_burn.dice" -> "Dice, any burn (pixel-pooled)"."""
    parts = key.split(".")
    if len(parts) == 3:
        aggregation, target, metric = parts
        return f"{METRIC_TITLES.get(metric, metric)}, {_label(target)} ({AGGREGATION_TITLES.get(aggregation, aggregation)})"
    return key.replace("_", " ")


def _table(header: list[str], rows: list[list[str]], css: list[str] | None = None) -> str:
    """An HTML table; cells are already HTML. css: an optional class per row."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{css[i]}"' if css and css[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _section(title: str, body: str) -> str:
    anchor = "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")
    return f'<section id="{anchor}"><h2>{_esc(title)}</h2>{body}</section>'


def _colour(cls: int) -> tuple[float, float, float]:
    """Class colour for plots, 0..1 RGB; untinted classes (black in the overlay) in greys."""
    if cls in BURN_CLASSES:
        return tuple(float(c) / 255 for c in CLASS_COLOURS_RGB[cls])
    return (0.45, 0.45, 0.45) if cls == 0 else (0.75, 0.65, 0.55)


# ---------------------------------------------------------------------------------------------
# plots


def _figure(width_in: float, height_in: float) -> Figure:
    figure = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png_data_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})  # no URL in the PNG header
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{_esc(alt)}">'


def _compact(count: int) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= size:
            return f"{count / size:.1f}{suffix}"
    return str(count)


def confusion_plot(counts) -> str:
    counts = np.asarray(counts, dtype=np.int64)
    rows = counts.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(rows > 0, counts / np.where(rows > 0, rows, 1), np.nan)
    figure = _figure(7.5, 6.0)
    ax = figure.add_subplot()
    ax.imshow(np.nan_to_num(share), cmap="Blues", vmin=0, vmax=1)
    labels = [LABELS[n] for n in CLASS_NAMES[: len(counts)]]
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("model's prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("Share of each true class's pixels, by prediction (pixel count)")
    for i in range(len(counts)):
        for j in range(len(counts)):
            if rows[i, 0] == 0:
                text, dark = ("no pixels" if j == i else ""), False
            else:
                text, dark = f"{share[i, j] * 100:.1f}%\n({_compact(int(counts[i, j]))})", share[i, j] > 0.55
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    return _png_data_uri(figure)


def class_bars_plot(metrics: dict) -> str:
    pooled = metrics["pixel_pooled"]
    intervals = (metrics.get("confidence_intervals") or {}).get("pixel_pooled") or {}
    targets = [*pooled["per_class"], ANY_BURN]
    figure = _figure(9.0, 4.2)
    ax = figure.add_subplot()
    x = np.arange(len(targets))
    width = 0.38
    for k, (metric, hatch, offset) in enumerate((("dice", "", -width / 2), ("sensitivity", "//", width / 2))):
        for t, target in enumerate(targets):
            entry = pooled[ANY_BURN] if target == ANY_BURN else pooled["per_class"][target]
            value = entry.get(metric)
            colour = (0.2, 0.2, 0.2) if target == ANY_BURN else _colour(t)
            if value is None:
                ax.text(x[t] + offset, 0.02, "n/a", ha="center", fontsize=8, rotation=90)
                continue
            ci = (intervals.get(target) or {}).get(metric)
            error = None
            if ci:
                error = [[max(value - ci["low"], 0)], [max(ci["high"] - value, 0)]]
            ax.bar(x[t] + offset, value, width, color=colour, hatch=hatch, edgecolor="black", linewidth=0.6,
                   alpha=1.0 if k == 0 else 0.55, yerr=error, capsize=3)
    ax.set_xticks(x, [_label(t) for t in targets], rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("pixel-pooled value (1 = perfect)")
    ax.set_title("Dice (solid) and sensitivity (hatched), with 95% bootstrap intervals over frames")
    ax.legend(handles=[Patch(facecolor="white", edgecolor="black", label="Dice"),
                       Patch(facecolor="white", edgecolor="black", hatch="//", label="Sensitivity")],
              loc="lower right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png_data_uri(figure)


def latency_plot(latency: dict) -> str:
    edges = np.asarray(latency["histogram"]["edges_ms"], dtype=np.float64)
    counts = np.asarray(latency["histogram"]["counts"], dtype=np.float64)
    figure = _figure(7.5, 3.2)
    ax = figure.add_subplot()
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=(0.3, 0.45, 0.7), edgecolor="white")
    for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
        ax.axvline(latency[q], color="black", linestyle=style, label=f"{q} = {latency[q]:.1f} ms")
    ax.set_xlabel("latency per frame, source to sink (ms)")
    ax.set_ylabel("frames")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return _png_data_uri(figure)


def _tinted(frame_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return tint(np.ascontiguousarray(frame_rgb, dtype=np.uint8), np.ascontiguousarray(mask, dtype=np.uint8), alpha=0.65)


def example_plot(example: Example, title: str) -> str:
    """The input, the ground truth and the prediction side by side, tinted by depth."""
    frame = np.asarray(example.frame_rgb, dtype=np.uint8)
    height, width = frame.shape[:2]
    figure = _figure(10.5, 10.5 / 3 * height / width + 0.5)
    panels = (
        (frame, "input"),
        (_tinted(frame, example.truth_mask), "ground truth"),
        (_tinted(frame, example.predicted_mask), "prediction"),
    )
    for k, (image, panel_title) in enumerate(panels):
        ax = figure.add_subplot(1, 3, k + 1)
        ax.imshow(image, interpolation="nearest")
        ax.set_title(panel_title, fontsize=10)
        ax.set_axis_off()
    figure.suptitle(title, fontsize=11)
    return _png_data_uri(figure)


# ---------------------------------------------------------------------------------------------
# sections


def _intended_use(card: dict) -> str:
    use = card.get("intended_use", "not stated in the model card")
    parts = [f'<p class="decision-support">{_esc(DECISION_SUPPORT)}</p>',
             f'<p class="intended-use"><strong>Intended use:</strong> {_render_value(use)}</p>']
    for key in ("training_data", "limitations"):
        if key in card:
            parts.append(f"<p><strong>{_esc(key.replace('_', ' ').capitalize())}:</strong> {_render_value(card[key])}</p>")
    parts.append("<p>The numbers below describe this recording and its ground-truth masks only; they do "
                 "not show how the model would do on patients.</p>")
    return "".join(parts)


def _at_a_glance(metrics: dict, drops: list | None, precision: dict | None) -> str:
    burn = metrics["pixel_pooled"][ANY_BURN]
    ci = ((metrics.get("confidence_intervals") or {}).get("pixel_pooled") or {}).get(ANY_BURN) or {}
    latency = metrics.get("latency_ms") or {}
    items = [
        f"Frames evaluated: <strong>{metrics['frames']['evaluated']}</strong>",
        f"Any-burn Dice (pixel-pooled): <strong>{_percent(burn.get('dice'))}</strong> (95% interval {_interval(ci.get('dice'))})",
        f"Any-burn sensitivity: <strong>{_percent(burn.get('sensitivity'))}</strong>; specificity: "
        f"<strong>{_percent(burn.get('specificity'))}</strong>; AUC: <strong>{_decimal(burn.get('auc'))}</strong>",
        f"Latency p95: <strong>{_number(latency.get('p95'), 'ms')}</strong>; throughput: "
        f"<strong>{_number(metrics.get('throughput_fps'), 'frames/s')}</strong> ({_replay_words(metrics)}; "
        "see Speed: replay latency is not bedside latency)",
    ]
    if drops is not None:
        items.append('<span class="drop">Drift: {} metric(s) dropped beyond the threshold</span>'.format(len(drops))
                     if drops else '<span class="ok">Drift: no metric dropped beyond the threshold</span>')
    if precision is not None:
        beyond = precision.get("beyond_gate") or []
        items.append(f'<span class="drop">Precision gate: {_esc(", ".join(beyond))} beyond the gate</span>' if beyond
                     else '<span class="ok">Precision gate: every precision within the gate</span>')
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _replay_words(metrics: dict) -> str:
    pacing = (metrics.get("latency_basis") or {}).get("pacing")
    return f"replay {PACING_WORDS.get(pacing, pacing)}" if pacing else "replay, pacing not recorded"


def _frames_section(frames: dict) -> str:
    rows = [
        ["evaluated (prediction and ground truth both present)", str(frames["evaluated"])],
        ["frame range", f"{frames['first']} to {frames['last']}" if frames.get("first") is not None else "none"],
        ["processed but no ground-truth mask", _frame_list(frames.get("missing_truth") or [])],
        ["ground-truth mask but no processed frame", _frame_list(frames.get("extra_truth") or [])],
    ]
    for reason, listed in (frames.get("not_evaluated") or {}).items():
        rows.append([f"not processed: {_esc(reason)}", _frame_list(listed)])
    css = ["" if r[1] == "none" or i < 2 else "warn" for i, r in enumerate(rows)]
    return _table(["", "frames"], rows, css) + "<p>No frame is skipped silently: every frame is in one of these rows.</p>"


def _any_burn_section(metrics: dict) -> str:
    pooled = metrics["pixel_pooled"][ANY_BURN]
    mean = metrics["per_frame_mean"][ANY_BURN]
    ci = metrics.get("confidence_intervals") or {}
    ci_pooled = (ci.get("pixel_pooled") or {}).get(ANY_BURN) or {}
    ci_mean = (ci.get("per_frame_mean") or {}).get(ANY_BURN) or {}
    rows = []
    for m in RATIO_METRICS:
        rows.append([METRIC_TITLES[m], _percent(pooled.get(m)), _interval(ci_pooled.get(m)), _percent(mean.get(m)),
                     _interval(ci_mean.get(m)), f"{mean['frames_defined'][m]}", _esc(METRIC_MEANINGS[m])])
    rows.append([METRIC_TITLES["auc"], _decimal(pooled.get("auc")), "", "", "", "", _esc(METRIC_MEANINGS["auc"])])
    pixels = pooled["pixels"]
    counts = _table(["truth burn pixels", "predicted burn pixels", "true positive", "false positive",
                     "false negative", "true negative"],
                    [[f"{pixels[k]:,}" for k in ("truth", "predicted", "tp", "fp", "fn", "tn")]])
    return ("<p>Burn of any depth (superficial to full thickness) against background and healthy skin.</p>"
            + _table(["metric", "pixel-pooled", "95% interval", "per-frame mean", "95% interval",
                      "frames where defined", "what it means"], rows)
            + counts)


def _per_class_section(metrics: dict) -> str:
    out = []
    for aggregation in ("pixel_pooled", "per_frame_mean"):
        block = metrics[aggregation]
        intervals = ((metrics.get("confidence_intervals") or {}).get(aggregation) or {})
        columns = list(RATIO_METRICS) + (["auc"] if aggregation == "pixel_pooled" else [])
        rows = []
        for target, entry in block["per_class"].items():
            row = [_esc(_label(target))]
            for m in columns:
                cell = _decimal(entry.get(m)) if m == "auc" else _percent(entry.get(m))
                if m == "dice":
                    ci = (intervals.get(target) or {}).get("dice")
                    cell += f'<br><small>{_interval(ci)}</small>' if ci else ""
                if aggregation == "per_frame_mean":
                    cell += f"<br><small>{entry['frames_defined'][m]} frames</small>"
                row.append(cell)
            rows.append(row)
        out.append(f"<h3>{AGGREGATION_TITLES[aggregation].capitalize()}</h3><p>{_esc(block.get('about', ''))}.</p>")
        out.append(_table(["class"] + [METRIC_TITLES[m] for m in columns], rows))
    pooled = metrics["pixel_pooled"]["per_class"]
    pixel_rows = [[_esc(_label(t))] + [f"{e['pixels'][k]:,}" for k in ("truth", "predicted", "tp", "fp", "fn", "tn")]
                  for t, e in pooled.items()]
    out.append("<h3>Pixel counts (all frames)</h3>")
    out.append(_table(["class", "truth", "predicted", "true positive", "false positive", "false negative",
                       "true negative"], pixel_rows))
    return "".join(out)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


_STATUS_WORDS = {"assessed": "assessed", "not_assessable": "not assessable", "not_evaluated": "not scored",
                 "not_processed": "not processed"}


def _images_and_cases_section(metrics: dict) -> str:
    """The tables of a validation on a dataset (`holoburn validate --truth`): a row per case, then
    a row per image; ids are the dataset's opaque ids."""
    if "per_case" not in metrics:
        return ("<p>Not a validation on a dataset: <code>holoburn validate --truth DATASET</code> gives a row per "
                "image and per case (patient).</p>")
    dataset = metrics["dataset"]
    within = f"split <strong>{_esc(dataset['split'])}</strong> of " if dataset["split"] else ""
    notes = [f"{within}a dataset in holoburn's layout (fingerprint {_esc(dataset['fingerprint'][:16])}): "
             f"{_count(dataset['images_scored'], 'image')} of {_count(dataset['cases'], 'case')}; "
             f"{_count(dataset['images_outside_split'], 'picture')} of other splits not run."]
    if dataset["pictures_without_label"]:
        named = [p["image"] or f"frame {p['frame']}" for p in dataset["pictures_without_label"]]
        notes.append(f'<span class="drop">{len(named)} pictures have no label in the dataset and are not scored: '
                     f"{_esc(_frame_list(named))}.</span>")
    if dataset["labels_without_picture"]:
        notes.append(f'<span class="drop">{len(dataset["labels_without_picture"])} labels have no picture in the '
                     f"source: {_esc(_frame_list(dataset['labels_without_picture']))}.</span>")
    notes.append("Dice over the pixels whose class is known: burn of unknown depth (label 6) and unknown (255) "
                 "pixels are left out and counted as unscored. A case's Dice pools the pixels of its scored images "
                 "(assessable or not), as the figures above pool frames; undefined where the case has no burn in "
                 "the truth or the prediction.")

    def scores(row) -> list[str]:  # nothing scored: no Dice at all, rather than an undefined one
        counts = row["any_burn_pixels"]
        if counts is None:
            return ['<span class="undefined">not scored</span>'] * 3
        return [_percent(row["any_burn_dice"]), _percent(row["mean_depth_dice"]),
                f"{counts['tp']:,} / {counts['fp']:,} / {counts['fn']:,}"]

    def outcome(row) -> str:
        words = _STATUS_WORDS.get(row["status"], row["status"])
        return _esc(words + (f": {row['reason'].replace('_', ' ')}" if row["reason"] else ""))

    cases = [[_esc(r["case"]), str(r["images"]), str(r["frames_evaluated"]), str(r["frames_assessed"]), *scores(r),
              f"{r['unscored_pixels']:,}"] for r in metrics["per_case"]]
    images = [[_esc(r["image"]), _esc(r["case"]), str(r["frame"]), outcome(r), *scores(r), f"{r['unscored_pixels']:,}"]
              for r in metrics["per_image"]]
    css = ["" if r["status"] == "assessed" else "warn" for r in metrics["per_image"]]
    burn = "any-burn pixels TP / FP / FN"
    return ("".join(f"<p>{n}</p>" for n in notes)
            + "<h3>Each case</h3>"
            + _table(["case", "images", "scored", "assessed", "any-burn Dice", "mean depth Dice", burn,
                      "pixels unscored"], cases)
            + "<h3>Each image</h3>"
            + _table(["image", "case", "frame", "outcome", "any-burn Dice", "mean depth Dice", burn,
                      "pixels unscored"], images, css))


def _burn_size_section(metrics: dict) -> str:
    parts = []
    tbsa = metrics.get("tbsa")
    if tbsa:
        parts.append("<p>%TBSA counts partial- and full-thickness burn only; the truth value comes from the "
                     "ground-truth mask through the same formula as the estimate. Errors are in %TBSA points, "
                     "estimate minus truth.</p>")
        parts.append(_table(["%TBSA estimate", "value"], [
            ["frames with both values", str(tbsa["frames"])],
            ["mean absolute error", _number(tbsa["mean_absolute_error_points"], "points", 2)],
            ["mean signed error (bias; positive = overestimate)", _number(tbsa["mean_signed_error_points"], "points", 2)],
            ["95th percentile of absolute error", _number(tbsa["p95_absolute_error_points"], "points", 2)],
            ["largest absolute error", _number(tbsa["max_absolute_error_points"], "points", 2)],
            [f"agreement on 'over {tbsa['referral_threshold_pct']:g}% TBSA'", _percent(tbsa["threshold_agreement"])],
            ["over the threshold in truth, missed by the estimate", str(tbsa["missed_over_threshold"])],
        ]))
    else:
        parts.append("<p>No %TBSA values were given (no body region configured).</p>")
    triage = metrics.get("triage")
    if triage:
        levels = triage["levels"]
        kappa = triage["cohen_kappa"]
        parts.append(f"<p>Triage from the prediction agreed with triage from the ground truth on "
                     f"<strong>{_percent(triage['agreement'])}</strong> of {triage['frames']} frames "
                     f"(Cohen's kappa {'undefined' if kappa is None else f'{kappa:.2f}'}; 1 = perfect, 0 = chance). "
                     f"Under-triage (prediction less urgent than truth): <strong>{triage['under_triage']}</strong> "
                     f"frames; over-triage: {triage['over_triage']} frames.</p>")
        counts = triage["table"]["counts"]
        parts.append(_table(["truth \\ prediction"] + [_esc(l) for l in levels],
                            [[_esc(levels[i])] + [str(c) for c in row] for i, row in enumerate(counts)]))
    else:
        parts.append("<p>No triage values were given.</p>")
    return "".join(parts)


PACING_WORDS = {
    "as_fast_as_possible": "as fast as possible",
    "realtime": "paced in real time",
}


def _latency_basis(metrics: dict) -> str:
    """What the latency figures measure, from metrics["latency_basis"] (written by validate)."""
    basis = metrics.get("latency_basis")
    if not basis:
        return ("<p>How these latencies were measured (pacing, start and end point) was not recorded with these "
                "metrics; they are not bedside latency.</p>")
    stages = basis.get("stage_ms_median") or {}
    stage_words = ", ".join(f"{_esc(k)} {v:.1f}&nbsp;ms" for k, v in stages.items())
    latency = metrics.get("latency_ms") or {}
    waiting = ""
    if stages and latency.get("p50") is not None:
        inside = sum(stages.values())
        waiting = (f" Together the stages' medians make {inside:.1f}&nbsp;ms; the rest of the median latency "
                   f"({latency['p50']:.1f}&nbsp;ms) is waiting between and before the stages.")
    items = [
        f"<li><strong>Pacing: {_esc(PACING_WORDS.get(basis['pacing'], basis['pacing']))}.</strong> "
        f"{_esc(basis['pacing_meaning'])}</li>",
        f"<li><strong>From</strong> {_esc(basis['from'])} <strong>to</strong> {_esc(basis['to'])}.</li>",
        f"<li><strong>Included:</strong> {_esc('; '.join(basis['includes']))}."
        + (f" Median time inside each stage: {stage_words}.{waiting}" if stage_words else "") + "</li>",
        f"<li><strong>Not included:</strong> {_esc('; '.join(basis['excludes']))}.</li>",
        f"<li><strong>Throughput:</strong> {_esc(basis['throughput'])}.</li>",
    ]
    return (f'<p class="replay-latency"><strong>Replay latency, not bedside latency.</strong> '
            f"{_esc(basis['not_bedside'])}</p><ul>{''.join(items)}</ul>")


def _speed_section(metrics: dict, backend: dict) -> str:
    latency = metrics.get("latency_ms")
    parts = ["<h3>Backend and device</h3>", _render_value(backend), "<h3>Latency per frame</h3>"]
    if latency:
        parts.append(_latency_basis(metrics))
        parts.append(_table(["latency per frame (source to sink, see above)", "ms"], [
            ["median (p50)", _number(latency["p50"], "ms", 2)],
            ["95th percentile (p95)", _number(latency["p95"], "ms", 2)],
            ["99th percentile (p99)", _number(latency["p99"], "ms", 2)],
            ["mean", _number(latency["mean"], "ms", 2)],
            ["largest", _number(latency["max"], "ms", 2)],
            ["throughput", _number(metrics.get("throughput_fps"), "frames/s")],
        ]))
        parts.append(_img(latency_plot(latency), "latency histogram"))
    else:
        parts.append("<p>No latencies were recorded.</p>")
    return "".join(parts)


def _precision_section(precision: dict | None) -> str:
    if not precision:
        return "<p>Not run (use <code>--compare fp32,fp16,int8</code>).</p>"
    precisions = precision["precisions"]
    others = precisions[1:]

    def rows_for(rows):
        body, css = [], []
        for r in rows:
            cells = [_esc(_metric_label(r["metric"]))] + [_percent(r["values"][p]) for p in precisions]
            for p in others:
                d = r["delta_points"][p]
                cells.append("undefined" if d is None else f"{d:+.2f}")
            body.append(cells)
            css.append("drop" if any(r["beyond_gate"].values()) else "")
        return body, css

    header = ["metric"] + [_esc(p) for p in precisions] + [f"{_esc(p)} − {_esc(precisions[0])} (points)" for p in others]
    key_rows = [r for r in precision["rows"] if r["metric"].startswith("pixel_pooled.")
                and r["metric"].rsplit(".", 1)[1] in ("dice", "sensitivity")]
    body, css = rows_for(key_rows)
    parts = [f"<p>Same frames at each precision; deltas against {_esc(precisions[0])} in percentage points. "
             f"Rows in red dropped by more than the accuracy gate of {precision['gate_points']:g} point(s).</p>",
             _table(header, body, css)]
    latency_rows = [[_esc(r["metric"].replace("latency_ms.", "latency "))]
                    + [_number(r["values"][p], "ms", 2) for p in precisions]
                    + ["" if r["delta_ms"][p] is None else f"{r['delta_ms'][p]:+.2f} ms" for p in others]
                    for r in precision.get("latency") or []]
    if latency_rows:
        parts.append(_table(["latency"] + [_esc(p) for p in precisions] + [f"{_esc(p)} − {_esc(precisions[0])}" for p in others],
                            latency_rows))
    all_body, all_css = rows_for(precision["rows"])
    parts.append(f"<details><summary>All {len(all_body)} metrics</summary>{_table(header, all_body, all_css)}</details>")
    return "".join(parts)


def _baseline_section(metrics: dict, baseline: dict | None, threshold_points: float) -> tuple[str, list | None]:
    if baseline is None:
        return "<p>No baseline given (use <code>--baseline metrics.json</code>).</p>", None
    rows = baseline_deltas(metrics, baseline, threshold_points)
    drops = [r for r in rows if r["dropped"]]

    def cells(r):
        d = r["delta_points"]
        return [_esc(_metric_label(r["metric"])), _percent(r["baseline"]), _percent(r["current"]),
                "undefined" if d is None else f"{d:+.2f}"]

    header = ["metric", "baseline", "this run", "change (points)"]
    if drops:
        verdict = (f'<p class="drop"><strong>{len(drops)} metric(s) dropped by more than {threshold_points:g} '
                   "percentage points against the baseline.</strong></p>")
        flagged = _table(header, [cells(r) for r in sorted(drops, key=lambda r: r["delta_points"])],
                         ["drop"] * len(drops))
    else:
        verdict = f'<p class="ok">No metric dropped by more than {threshold_points:g} percentage points.</p>'
        flagged = ""
    everything = _table(header, [cells(r) for r in rows], ["drop" if r["dropped"] else "" for r in rows])
    return verdict + flagged + f"<details><summary>All {len(rows)} compared metrics</summary>{everything}</details>", drops


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}&nbsp;%" if whole else "undefined"


def _dice_words(dice: float) -> str:
    return "undefined" if math.isnan(dice) else f"{dice:.3f}"


def _burn_wrong_caption(e: Example) -> tuple[str, str]:
    """(picture title, HTML caption) of a frame in the burns-most-wrong list."""
    r = e.errors
    title = (f"frame {e.frame_index}: {r.burn_wrong:,} of {r.truth_burn:,} burn pixels missed or wrong depth; "
             f"any-burn Dice {_dice_words(r.dice)}")
    caption = (f"<strong>Frame {e.frame_index}</strong>: {r.burn_wrong:,} of the {r.truth_burn:,} burn pixels in the "
               f"ground truth wrong ({_share(r.burn_wrong, r.truth_burn)}): {r.missed:,} missed (called no burn), "
               f"{r.wrong_depth:,} given another depth; {r.false_alarm:,} pixels called burn outside the burn; "
               f"any-burn Dice {_dice_words(r.dice)}.")
    return title, caption


def _false_alarm_caption(e: Example) -> tuple[str, str]:
    r = e.errors
    where = "the ground truth has no burn in this frame" if not r.truth_burn else \
        f"beside {r.truth_burn:,} burn pixels in the ground truth"
    title = f"frame {e.frame_index}: {r.false_alarm:,} pixels called burn where there is none"
    caption = (f"<strong>Frame {e.frame_index}</strong>: {r.false_alarm:,} pixels called burn where the ground truth "
               f"has none ({_esc(where)}); any-burn Dice {_dice_words(r.dice)}.")
    return title, caption


def _pictures(examples: list[Example], describe, none: str) -> str:
    if not examples:
        return f"<p>{_esc(none)}</p>"
    parts = []
    for e in examples:
        title, caption = describe(e)
        parts.append(f'<figure>{_img(example_plot(e, title), title)}<figcaption>{caption}</figcaption></figure>')
    return "".join(parts)


def _not_assessable_table(not_assessable: dict) -> str:
    if not not_assessable:
        return "<p>Every evaluated frame was assessable.</p>"
    rows = []
    for reason, frames in sorted(not_assessable.items()):
        with_burn = sorted(((f, b) for f, b in frames if b), key=lambda fb: (-fb[1], fb[0]))
        rows.append([_esc(reason.replace("_", " ")), f"{len(frames)}: {_frame_list([f for f, _ in frames])}",
                     f"{len(with_burn)}: {_frame_list([f for f, _ in with_burn])}" if with_burn else "none",
                     f"{sum(b for _, b in with_burn):,}"])
    return (_table(["reason", "frames", "of them with burn in the ground truth (most burn first)",
                    "burn pixels in their ground truth"], rows)
            + "<p>These frames got no numbers and no triage (the overlay said NOT ASSESSABLE), so they are in "
              "neither list above; burn in their ground truth went unassessed, not wrongly assessed. Their "
              "pixels still count in the all-frame metrics; the coverage in metrics.json says how many frames "
              "were assessed.</p>")


def _worst_frames_section(worst: WorstFrames | None) -> str:
    if worst is None:
        return "<p>No frames were kept.</p>"
    legend = "".join(
        f'<span class="swatch" style="background: rgb{tuple(int(c) for c in CLASS_COLOURS_RGB[c])}"></span>'
        f"{_esc(LABELS[CLASS_NAMES[c]])} " for c in BURN_CLASSES)
    return "".join([
        f"<p>Assessed frames only, up to {worst.keep} in each list, worst first. Each picture shows the input, the "
        f"ground truth and the model's prediction (its own classes, before uncertain pixels are greyed out). "
        f"Colours: {legend}</p>",
        "<h3>Burns most wrong: burn missed or given the wrong depth</h3>",
        "<p>Frames with burn in the ground truth, ranked by how many of their burn pixels the model missed (called "
        "healthy skin or background) or gave another depth.</p>",
        _pictures(worst.burns_most_wrong(), _burn_wrong_caption,
                  "No assessed frame had burn in its ground truth that the model missed or gave another depth."),
        "<h3>Worst false alarms: burn called where there is none</h3>",
        "<p>Frames ranked by how many pixels the model called burn (any depth) where the ground truth has no burn; "
        "frames without any burn in the ground truth are included.</p>",
        _pictures(worst.false_alarms(), _false_alarm_caption,
                  "No assessed frame had burn called where the ground truth has none."),
        "<h3>Not assessable: in neither list</h3>",
        _not_assessable_table(worst.not_assessable),
    ])


def _key_values(pairs) -> str:
    """A two-column table without a header; cells are already HTML."""
    return "<table><tbody>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in pairs) + "</tbody></table>"


def _render_value(value) -> str:
    if isinstance(value, dict):
        return _key_values((_esc(str(k)), _render_value(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            return _esc(", ".join(str(v) for v in value))
        return "<ul>" + "".join(f"<li>{_render_value(v)}</li>" for v in value) + "</ul>"
    return _esc(str(value))


def _block_words(ci: dict) -> str:
    block = int(ci.get("block_frames") or 1)
    return f" in runs of {block} consecutive frames (neighbouring frames are alike)" if block > 1 else ""


def _glossary(metrics: dict) -> str:
    items = [f"<dt>{METRIC_TITLES[m]}</dt><dd>{_esc(meaning)}</dd>" for m, meaning in METRIC_MEANINGS.items()]
    items += [
        f"<dt>Pixel-pooled</dt><dd>{_esc(metrics['pixel_pooled'].get('about', ''))}.</dd>",
        f"<dt>Per-frame mean</dt><dd>{_esc(metrics['per_frame_mean'].get('about', ''))}.</dd>",
        "<dt>Undefined</dt><dd>a ratio whose denominator is zero, e.g. Dice of a class that is in neither the "
        "ground truth nor the prediction; shown as 'undefined' (null in metrics.json), never as 0 or 100 %. "
        "Per-frame means use only the frames where the ratio is defined.</dd>",
        "<dt>95% interval</dt><dd>bootstrap over frames: frames drawn again at random, with replacement"
        + _block_words(metrics.get("confidence_intervals") or {}) + ", "
        f"{_esc(str((metrics.get('confidence_intervals') or {}).get('resamples', '')))} times; the middle 95% of "
        "the results.</dd>",
        "<dt>Points</dt><dd>percentage points: a drop from 85.0% to 83.0% is 2 points.</dd>",
        f"<dt>AUC resolution</dt><dd>{_esc((metrics.get('auc') or {}).get('binning', ''))}.</dd>",
    ]
    return f"<dl>{''.join(items)}</dl>"


# ---------------------------------------------------------------------------------------------
# the page

_PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr.drop td, p.drop, span.drop { background: #fde2e2; color: #8a0000; }
tr.warn td { background: #fff4d6; }
p.ok, span.ok { color: #145a14; }
.decision-support { font-size: 1.3em; font-weight: bold; background: #fff4d6; border-left: 6px solid #e0a000; padding: 0.6em 0.8em; }
.intended-use { font-size: 1.1em; }
.undefined { color: #888; font-style: italic; }
.swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #444; vertical-align: middle; margin: 0 0.2em 0 0.6em; }
img { max-width: 100%; display: block; margin: 0.8em 0; }
figure { margin: 1.2em 0; }
figcaption { font-size: 0.92em; }
pre { background: #f4f4f4; padding: 0.8em; white-space: pre-wrap; word-break: break-all; }
.meta { color: #555; }
dt { font-weight: bold; margin-top: 0.4em; }
</style>
</head>
<body>
<h1>$title</h1>
<p class="meta">Model $model_id, written $written (UTC).</p>
$sections
</body>
</html>
""")


def write_report(
    out_dir,
    metrics: dict,
    *,
    model_card: dict,
    command: str,
    backend: dict,
    worst: WorstFrames | None = None,
    baseline: dict | None = None,
    threshold_points: float = 2.0,
    precision_comparison: dict | None = None,
) -> Path:
    """Write OUT_DIR/report.html and return its path.

    metrics: `ValidationAccumulator.summary()`. model_card: the card's YAML as a dict.
    command: the exact command line. backend: backend, version, device, precision, ... (shown
    as given). worst: the frames kept while scoring (`WorstFrames`). baseline: a stored summary to compare with (drops beyond threshold_points are
    highlighted). precision_comparison: `compare_precisions(...)`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    baseline_html, drops = _baseline_section(metrics, baseline, threshold_points)
    confusion = metrics["confusion_matrix"]["counts"]
    bodies = {
        "Intended use": _intended_use(model_card),
        "At a glance": _at_a_glance(metrics, drops, precision_comparison),
        "Frames evaluated": _frames_section(metrics["frames"]),
        "Any burn (burn against no burn)": _any_burn_section(metrics),
        "Each burn depth": _per_class_section(metrics),
        "Confusion matrix": "<p>Rows: the ground truth; columns: what the model said. The diagonal is agreement; "
                            "each row adds up to 100%.</p>" + _img(confusion_plot(confusion), "confusion matrix"),
        "Dice and sensitivity by class": _img(class_bars_plot(metrics), "Dice and sensitivity by class"),
        "Each image and each case": _images_and_cases_section(metrics),
        "Burn size (%TBSA) and triage": _burn_size_section(metrics),
        "Speed": _speed_section(metrics, backend),
        "Precision comparison": _precision_section(precision_comparison),
        "Baseline comparison (drift check)": baseline_html,
        "Worst frames": _worst_frames_section(worst),
        "Model card": _render_value({k: v for k, v in model_card.items() if k != "intended_use"}),
        "Reproduce this report": f"<p>Run this command with the same model, recording and masks:</p><pre>{_esc(command)}</pre>",
        "What the numbers mean": _glossary(metrics),
    }
    page = _PAGE.substitute(
        title="holoburn validation report",
        model_id=_esc(str(model_card.get("model_id", "unnamed"))),
        written=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        sections="\n".join(_section(title, bodies[title]) for title in SECTION_TITLES),
    )
    path = out_dir / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
