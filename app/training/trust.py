"""`holoburn trust`: calibrate a model's out-of-domain threshold and check what a clinician would
see on pictures the model never trained on.

1. Calibration: the mean top-class probability over skin pixels (clinical.assessability) of
   held-in frames (`synth` family varied, a seed used neither in training nor in held-out tests);
   the threshold is the percentile that lets `pass_share` of them through. Written to the card.
2. Checks, each frame through the pipeline's own CPU lane runtime (picture checks, model,
   uncertain pixels, findings, triage), with the new threshold:
   - real photographs without burn, held out of training (`photos.HELD_OUT_PHOTOS`): each must be
     not assessable, or show at most 2 % burn pixels and no "refer";
   - held-out synthetic families: varied (in domain), contact (an outline never trained on), and
     `independent` (scenes from a generator written without reading synth's code): coverage and
     Dice on all frames and on assessed frames.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from holoburn.app.synthesis import photos, synth
from holoburn.clinical.assessability import UNCERTAIN, AssessLimits
from holoburn.clinical.depth import BURN_CLASSES, HEALTHY_SKIN, NUM_CLASSES
from holoburn.clinical.metrics import confusion_matrix, dice_summary
from holoburn.processing.frame import Frame

CALIBRATION_SEED = 5_000_001
HELDOUT_SEED = 1_000_001
MAX_BURN_SHARE = 0.02  # a photograph without burn may show at most this share of burn pixels


def lane_runtime(card, limits):
    from holoburn.app.config import load_config
    from holoburn.app.graph import lane_policies
    from holoburn.clinical.triage import Lane
    from holoburn.engines.backend import open_backend
    from holoburn.processing.runtime import CpuLaneRuntime

    policy = lane_policies(load_config(None))[Lane.parse("ROUTINE")]
    backend = open_backend(card, "onnxruntime", "fp32", device="cpu")
    return CpuLaneRuntime(policy, card=card, backend=backend, render=False, limits=limits)


def assess_frames(runtime, images, source="check"):
    """Each image through prepare/infer/postprocess: (frames with findings and shown masks)."""
    from holoburn.processing.runtime import LaneBatch

    done = []
    for start in range(0, len(images), 8):
        frames = [Frame.of(source, start + i, 0.0, im) for i, im in enumerate(images[start : start + 8])]
        batch = LaneBatch(runtime.lane, frames)
        for stage in ("prepare", "infer", "postprocess"):
            getattr(runtime, stage)(batch)
        runtime.release(batch)
        done += frames
    return done


def skin_confidences(runtime, images) -> list:
    """Each image's mean top-class probability over skin pixels (None: no skin)."""
    return [f.findings.get("skin_confidence") for f in assess_frames(runtime, images)]


def calibrate(card, images, pass_share: float = 0.98) -> tuple[float | None, list[float]]:
    """The out-of-domain threshold for `card`: the percentile of the images' skin confidence that
    lets `pass_share` of them through (None when none shows skin), and those confidences."""
    values = [c for c in skin_confidences(lane_runtime(card, AssessLimits(min_skin_confidence=None)), images)
              if c is not None]
    return (float(np.percentile(values, 100 * (1 - pass_share))) if values else None), values


def _dice(frames, masks):
    """Dice over the frames' shown masks (uncertain pixels count as healthy skin: no burn shown)."""
    if not frames:
        return {"any_burn_dice": None, "mean_depth_dice": None}
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for frame, truth in zip(frames, masks):
        shown = frame.extra.get("shown_mask", frame.mask)
        confusion += confusion_matrix(truth, np.where(shown == UNCERTAIN, HEALTHY_SKIN, shown))
    summary = dice_summary(confusion)
    depth = summary["mean_depth_dice"]
    return {"any_burn_dice": round(summary["any_burn_dice"], 4), "mean_depth_dice": None if depth is None else round(depth, 4)}


def check_family(runtime, pairs) -> dict:
    frames = assess_frames(runtime, [p[0] for p in pairs])
    masks = [p[1] for p in pairs]
    assessed = [i for i, f in enumerate(frames) if f.findings.get("assessable")]
    reasons: dict[str, int] = {}
    for f in frames:
        if not f.findings.get("assessable"):
            reason = f.findings.get("not_assessable_reason") or f.status
            reasons[reason] = reasons.get(reason, 0) + 1
    return {
        "frames": len(frames),
        "coverage": round(len(assessed) / len(frames), 4),
        "not_assessable": reasons,
        "all_frames": _dice(frames, masks),
        "assessed_frames": _dice([frames[i] for i in assessed], [masks[i] for i in assessed]),
    }


def check_photographs(runtime, names) -> dict:
    results = {}
    for name in names:
        frame = assess_frames(runtime, [photos.load_photo(name)])[0]
        f = frame.findings
        if f.get("assessable"):
            shown = frame.extra["shown_mask"]
            burn = float(np.isin(shown, BURN_CLASSES).mean())
            level = (f.get("triage") or {}).get("level")
            ok = burn <= MAX_BURN_SHARE and level != "refer"
            results[name] = {"assessable": True, "burn_share_of_picture": round(burn, 4), "triage": level,
                             "skin_confidence": f.get("skin_confidence"), "pass": ok}
        else:
            results[name] = {"assessable": False, "reason": f.get("not_assessable_reason") or frame.status,
                             "skin_confidence": f.get("skin_confidence"), "pass": True}
    return results


def run_trust(card_path, *, calibration_frames: int = 300, heldout_frames: int = 150, pass_share: float = 0.98,
              write_card: bool = False, progress=print) -> dict:
    import yaml

    from holoburn.app.synthesis import independent
    from holoburn.engines.card import load_card

    card = load_card(card_path)
    size = (640, 480)
    calibration = [f for f, _ in synth.iter_frames(calibration_frames, CALIBRATION_SEED, size, 3, family="varied")]
    threshold, scores = calibrate(card, calibration, pass_share)
    progress(f"calibration: {len(scores)} held-in frames, threshold {threshold:.4f} (p{100 * (1 - pass_share):.0f})")
    runtime = lane_runtime(card, AssessLimits(min_skin_confidence=threshold))
    report = {
        "model": card.model_id,
        "calibration": {
            "data": f"holoburn synth family varied, seed {CALIBRATION_SEED}, {calibration_frames} frames of 640x480, 3 per scene",
            "score": "mean top-class probability over skin pixels (clinical.assessability.skin_confidence), ONNX Runtime fp32",
            "pass_share": pass_share,
            "threshold": round(threshold, 4),
            "percentiles": {f"p{p}": round(float(np.percentile(scores, p)), 4) for p in (1, 2, 5, 50)},
        },
        "photographs_held_out": check_photographs(runtime, photos.HELD_OUT_PHOTOS),
        "families": {},
    }
    progress("photographs: " + ", ".join(f"{k} {'ok' if v['pass'] else 'FAIL'}" for k, v in report["photographs_held_out"].items()))
    sets = {
        "varied": list(synth.iter_frames(heldout_frames, HELDOUT_SEED, size, 5, family="varied")),
        "contact": list(synth.iter_frames(heldout_frames, HELDOUT_SEED, size, 5, family="contact")),
        "independent": independent.independent_frames(heldout_frames, HELDOUT_SEED, size),
    }
    for name, pairs in sets.items():
        report["families"][name] = check_family(runtime, pairs)
        progress(f"{name}: {report['families'][name]}")
    if write_card:
        raw = yaml.safe_load(Path(card_path).read_text())
        raw["assessability"] = {
            "min_skin_confidence": round(threshold, 4),
            "calibration": report["calibration"],
            "photographs_held_out": {k: {kk: vv for kk, vv in v.items() if kk != "pass"} for k, v in report["photographs_held_out"].items()},
            "held_out_families": report["families"],
        }
        Path(card_path).write_text(yaml.safe_dump(raw, sort_keys=False, width=100, default_flow_style=None))
    return report


def add_trust_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help="model card (YAML)")
    parser.add_argument("--out", default=None, help="write the report here as JSON")
    parser.add_argument("--calibration-frames", type=int, default=300)
    parser.add_argument("--heldout-frames", type=int, default=150)
    parser.add_argument("--write-card", action="store_true", help="record the threshold and the checks in the card")
    return parser


def run_trust_command(args: argparse.Namespace) -> dict:
    report = run_trust(args.model, calibration_frames=args.calibration_frames, heldout_frames=args.heldout_frames,
                       write_card=args.write_card)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return report
