"""`holoburn validate`: replay a recording through the same graph as `run`, compare every
predicted mask with its ground truth, write metrics.json and a report a clinician can read.

Ground truth is one of: masks by frame index (`--masks DIR|NPZ` with a video), masks named as the
pictures (`--masks DIR` with `--source image:PATH`), or the labels of a dataset written by
`holoburn dataset import` (`--truth DATASET [--split NAME]`: its own images, or `--source
image:DIR` paired by id), which adds a row per image and per case to metrics.json and the report."""
from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from holoburn.app.datasets.importer import IMAGE_ID
from holoburn.app.datasets.labels import BURN_UNSPECIFIED
from holoburn.app.datasets.labels import UNKNOWN as UNKNOWN_LABEL
from holoburn.clinical.burn_size import burn_findings, count_pixels, region_tbsa_pct
from holoburn.clinical.depth import BURN_CLASSES, NUM_CLASSES
from holoburn.clinical.errors import BadInput
from holoburn.clinical.metrics import ValidationAccumulator, compare_precisions, compare_to_baseline, ratios
from holoburn.clinical.triage import TriagePolicy, triage_level
from holoburn.processing.preprocess import array_module, restore_probabilities
from holoburn.app.config import load_config
from holoburn.app.report.page import WorstFrames, write_report


def add_validate_arguments(p):
    p.add_argument("--source", help="video:PATH of the recording, or image:PATH of pictures (a folder, a glob; "
                                    "masks paired by name); with --truth, default: the dataset's own images")
    truth = p.add_mutually_exclusive_group(required=True)
    truth.add_argument("--masks", help="ground truth: a directory of 000000.png ... or an .npz; for image:PATH a "
                                       "directory of PNGs named as the pictures")
    truth.add_argument("--truth", metavar="DATASET",
                       help="ground truth: a dataset written by `holoburn dataset import` (labels paired with "
                            "pictures by id); adds per-image and per-case tables")
    p.add_argument("--split", help="with --truth: score only this split of the dataset's splits.json (e.g. test)")
    p.add_argument("--out", required=True, help="output directory (metrics.json, report.html, runs)")
    p.add_argument("--config", help="YAML merged over the defaults (e.g. replay-validation.yaml)")
    p.add_argument("--model", help="model card YAML (default: the shipped model)")
    p.add_argument("--backend", help="auto | onnxruntime | torch | tensorrt | tensorrt-rtx")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), help="precision (default fp32)")
    p.add_argument("--compare", help="comma-separated precisions to run side by side, e.g. fp32,fp16,int8")
    p.add_argument("--baseline", help="metrics.json of an earlier validation: flag drops (drift gate)")
    p.add_argument("--threshold", type=float, default=2.0, help="drift threshold in points (default 2.0)")
    p.add_argument("--body-region", help="body region in view, for %%TBSA error")
    p.add_argument("--max-frames", type=int, help="validate only the first N frames")
    p.add_argument("--realtime", action="store_true", default=None,
                   help="pace frames by the recording's timestamps, as a camera delivers them (default: as fast "
                        "as possible, so each frame's latency includes waiting behind earlier frames)")
    p.add_argument("--no-auc", action="store_true", help="skip probabilities (faster; no AUC)")
    p.add_argument("--bootstrap-block", type=int, default=15,
                   help="consecutive frames drawn together in the bootstrap intervals (default 15, half a "
                        "second at 30 fps: neighbouring frames are alike; 1 = plain bootstrap)")


class GroundTruth:
    """Ground-truth masks by frame index: PNGs named 000000.png ... or an .npz (arrays named by
    zero-padded index, or one (N, H, W) array)."""

    def __init__(self, location: str | Path):
        self.path = Path(location)
        if not self.path.exists():
            raise BadInput(f"ground-truth masks not found: {self.path}")
        self._npz = None
        if self.path.is_dir():
            self.indices = sorted(int(p.stem) for p in self.path.glob("*.png") if p.stem.isdigit())
        elif self.path.suffix == ".npz":
            self._npz = np.load(self.path)
            keys = list(self._npz.keys())
            if len(keys) == 1 and self._npz[keys[0]].ndim == 3:
                self._stack = self._npz[keys[0]]
                self.indices = list(range(len(self._stack)))
            else:
                self._stack = None
                self.indices = sorted(int(k) for k in keys if k.isdigit())
        else:
            raise BadInput(f"ground truth {self.path}: give a directory of PNG masks or an .npz file")
        if not self.indices:
            raise BadInput(f"no ground-truth masks in {self.path} (expected 000000.png, ...)")
        self._available = set(self.indices)

    def __contains__(self, index: int) -> bool:
        return index in self._available

    def mask(self, index: int) -> np.ndarray:
        if self._npz is not None:
            return self._stack[index] if self._stack is not None else self._npz[f"{index:06d}"]
        path = self.path / f"{index:06d}.png"
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if mask is None or mask.ndim != 2:
            raise BadInput(f"ground-truth mask {path} is not a single-channel 8-bit PNG")
        return mask


class PairedTruth:
    """Ground truth of a still-picture source (image:PATH), paired by name: the picture
    ROOT/ward3/burn_07.jpg has the mask MASKS/ward3/burn_07.png (its path below the source's root,
    with .png for its suffix), drawn on the picture as it is shown (EXIF orientation applied).
    By name rather than by order, so that a picture without a mask, an unreadable one or an extra
    mask shifts no pair. Frames without a mask are reported by index and masks without a picture
    by number only: mask names mirror picture names, which can name patients."""

    def __init__(self, location: str | Path, names: list[str]):
        """names: each frame's picture path below the source's root, without its suffix
        (media.images.ImageReader.relative_names)."""
        self.path = Path(location)
        if not self.path.is_dir():
            raise BadInput(f"ground-truth masks {self.path}: for pictures give a folder of PNG masks named as the "
                           "pictures (burn_07.jpg -> burn_07.png)")
        masks = {p.relative_to(self.path).with_suffix("").as_posix(): p for p in self.path.rglob("*.png")
                 if not p.name.startswith(".")}
        self._paths = {index: masks[name] for index, name in enumerate(names) if name in masks}
        if not self._paths:
            raise BadInput(f"no mask in {self.path} is named as a picture of the source (the picture burn_07.jpg "
                           f"pairs with {self.path / 'burn_07.png'}; in subfolders, with the same subfolders)")
        self.indices = sorted(self._paths)
        self.masks_without_picture = len(set(masks) - set(names))

    def __contains__(self, index: int) -> bool:
        return index in self._paths

    def mask(self, index: int) -> np.ndarray:
        mask = cv2.imread(str(self._paths[index]), cv2.IMREAD_UNCHANGED)
        if mask is None or mask.ndim != 2:  # named by frame: the mask's name is the picture's
            raise BadInput(f"the ground-truth mask of frame {index} is not a single-channel 8-bit PNG "
                           "(source_map.IDENTIFIERS.json of a run with --source-map says which picture it is)")
        return mask


class DatasetTruth:
    """Ground truth from a dataset in holoburn's layout (holoburn.app.datasets): the picture whose
    path below the source's root is an image id (`case0003_002.png`) has the label
    DATASET/labels/<id>.png, whose case dataset.json gives. With a split, only that split's
    images are scored. Names are opaque ids, so outputs may give them; a picture whose name is not
    an id of the dataset is named only where it looks like one (case<n>_<n>), by frame otherwise."""

    def __init__(self, location: str | Path, split: str | None = None):
        from holoburn.app.datasets.split import read_dataset_json, read_split

        self.path = Path(location)
        self.info = read_dataset_json(self.path)
        self.split = split
        images = self.info["images"]
        self.scored = set(read_split(self.path, self.info, split) if split is not None else images)
        if not self.scored:
            raise BadInput(f"split {split!r} of {self.path} has no images (too few cases for its fraction): split "
                           f"the dataset again with other --fractions, or give another --split")
        self.case_of = {image_id: entry["case"] for image_id, entry in images.items()}
        # set by pair(): the pictures run (their ids by frame index), which of them have labels
        self._paths: dict[int, Path] = {}
        self.ids: list[str] = []
        self.indices: list[int] = []
        self.without_label: list[tuple[int, str | None]] = []
        self.outside_split = 0

    def pair(self, names: list[str]) -> list[int]:
        """Pairs the source's pictures (names: each picture's path below its root, no suffix) with
        labels; returns the positions of the pictures to run: all but those of other splits."""
        run = [k for k, name in enumerate(names) if name in self.scored or name not in self.case_of]
        self.ids = [names[k] for k in run]
        self.outside_split = len(names) - len(run)
        self._paths = {index: self.path / "labels" / f"{name}.png" for index, name in enumerate(self.ids)
                       if name in self.scored}
        if not self._paths:
            within = f"split {self.split!r} of " if self.split is not None else ""
            raise BadInput(f"no picture of the source is named as an image of {within}{self.path} (the picture "
                           f"case0001_001.png pairs with {self.path / 'labels' / 'case0001_001.png'}): give the "
                           f"dataset's images, or leave out --source")
        self.indices = sorted(self._paths)
        self.without_label = [(index, name if IMAGE_ID.fullmatch(name) else None) for index, name in enumerate(self.ids)
                              if index not in self._paths]
        return run

    def __contains__(self, index: int) -> bool:
        return index in self._paths

    def mask(self, index: int) -> np.ndarray:
        mask = cv2.imread(str(self._paths[index]), cv2.IMREAD_UNCHANGED)
        if mask is None or mask.ndim != 2:
            raise BadInput(f"the label {self._paths[index]} is not a single-channel 8-bit PNG; import the dataset "
                           "again")
        return mask


def softmax(logits):
    xp = array_module(logits)
    shifted = logits - logits.max(axis=0, keepdims=True)
    e = xp.exp(shifted)
    return e / e.sum(axis=0, keepdims=True)


class Scorer:
    """Observer of the results writer: scores each frame against its ground truth as it passes."""

    def __init__(self, truth: GroundTruth, *, region_pct=None, policy=TriagePolicy(), probabilities=True, examples=6):
        self.truth, self.region_pct, self.policy = truth, region_pct, policy
        self.probabilities = probabilities
        self.accumulator = ValidationAccumulator()  # every processed frame, assessable or not
        self.assessed = ValidationAccumulator()  # only the frames that got numbers
        self.not_assessable: dict[str, int] = {}
        self.worst = WorstFrames(examples)
        self.seen: set[int] = set()
        self.unscored_pixels = 0  # truth pixels of unknown class or burn of unknown depth, left out
        self.unscored_by_frame: dict[int, int] = {}
        self.not_assessable_by_frame: dict[int, str] = {}

    def __call__(self, frame, record) -> None:
        self.seen.add(frame.index)
        if frame.index not in self.truth:
            self.accumulator.note_missing_truth(frame.index)
            return
        if not frame.ok:
            self.accumulator.note_not_evaluated(frame.index, frame.status)
            return
        truth = self.truth.mask(frame.index)
        if truth.shape != frame.mask.shape[:2]:  # e.g. a mask drawn on a picture before its EXIF turn
            self.accumulator.note_not_evaluated(frame.index, "truth_size_differs")
            return
        predicted = frame.mask
        probs = None
        if self.probabilities and frame.logits is not None:
            probs = restore_probabilities(softmax(np.asarray(frame.logits[0], np.float32)), frame.letterbox)
        known = truth < NUM_CLASSES
        if not known.all():
            # an imported dataset's labels (app/datasets): 6 burn of unknown depth, 255 unknown
            if not np.isin(truth[~known], (BURN_UNSPECIFIED, UNKNOWN_LABEL)).all():
                self.accumulator.note_not_evaluated(frame.index, "truth_unknown_label")
                return
            # scored on the pixels whose class is known, as one row of pixels
            self.unscored_by_frame[frame.index] = int((~known).sum())
            self.unscored_pixels += self.unscored_by_frame[frame.index]
            truth, predicted = truth[known][None, :], predicted[known][None, :]
            probs = None if probs is None else np.asarray(probs).reshape(probs.shape[-3], -1)[:, known.ravel()][:, None, :]
        truth_findings = burn_findings(count_pixels(truth), region_pct=self.region_pct)
        # a frame that is not assessable has no %TBSA and no triage: left out of those statistics
        # (the coverage says how many), never scored as triage "none"
        scored = dict(latency_ms=record["latency_ms"], predicted_tbsa_pct=record["tbsa_pct"],
                      truth_tbsa_pct=truth_findings["tbsa_pct"],
                      predicted_triage=record["triage"]["level"] if record["triage"] else None,
                      truth_triage=triage_level(truth_findings, policy=self.policy)["level"])
        self.accumulator.add(frame.index, truth, predicted, probs, **scored)
        if record["assessable"]:
            self.assessed.add(frame.index, truth, predicted, probs, **scored)
            # the input picture where the lane kept it on the host (CPU), else the overlay (GPU lanes)
            if truth.shape == frame.mask.shape:  # pictures only where the whole truth is known
                self.worst.offer(frame.index, frame.image if frame.image is not None else frame.overlay, truth,
                                 frame.mask)
        else:  # no numbers and no triage reached the clinician: listed apart, never as a miss or false alarm
            reason = record["not_assessable_reason"]
            self.not_assessable[reason] = self.not_assessable.get(reason, 0) + 1
            self.not_assessable_by_frame[frame.index] = reason
            self.worst.note_not_assessable(frame.index, reason, truth)
        frame.logits = None

    def finish(self, last_index: int | None) -> None:
        """Ground truth for frames that never came (past the end, or beyond --max-frames)."""
        for index in self.truth.indices:
            if index not in self.seen:
                self.accumulator.note_extra_truth(index)


def _scores(counts) -> dict:
    """Any-burn Dice, mean Dice of the burn depths present (truth or prediction) and the any-burn
    pixel counts, from outcome counts (C + 1, 4) TP, FP, FN, TN (clinical.metrics.outcome_counts);
    None where undefined or where nothing was scored."""
    if counts is None:
        return {"any_burn_dice": None, "mean_depth_dice": None, "any_burn_pixels": None}
    dice = ratios(counts)["dice"]
    depth = [float(dice[c]) for c in BURN_CLASSES if not np.isnan(dice[c])]
    tp, fp, fn, _ = (int(v) for v in counts[-1])
    return {"any_burn_dice": None if np.isnan(dice[-1]) else float(dice[-1]),
            "mean_depth_dice": float(np.mean(depth)) if depth else None,
            "any_burn_pixels": {"tp": tp, "fp": fp, "fn": fn}}


def image_and_case_tables(scorer: Scorer, truth: DatasetTruth) -> tuple[list[dict], list[dict]]:
    """metrics.json's `per_image` and `per_case`: a row per labelled picture of the run (its id,
    case, frame, what became of it, its scores, its truth pixels left unscored) and a row per case,
    whose scores pool the outcome counts of its evaluated images, as the pooled metrics pool frames."""
    frames, counts = scorer.accumulator.frame_counts()
    counts_of = dict(zip(frames.tolist(), counts))
    not_evaluated = {i: reason for reason, listed in scorer.accumulator.not_evaluated.items() for i in listed}
    per_image, pooled, per_case = [], {}, {}
    for index in truth.indices:
        image_id = truth.ids[index]
        case = truth.case_of[image_id]
        if index in counts_of:
            reason = scorer.not_assessable_by_frame.get(index)
            status = "not_assessable" if reason else "assessed"
        elif index in not_evaluated:
            status, reason = "not_evaluated", not_evaluated[index]
        else:  # never processed: beyond --max-frames
            status, reason = "not_processed", None
        per_image.append({"image": image_id, "case": case, "frame": index, "status": status, "reason": reason,
                          **_scores(counts_of.get(index)), "unscored_pixels": scorer.unscored_by_frame.get(index, 0)})
        row = per_case.setdefault(case, {"case": case, "images": 0, "frames_evaluated": 0, "frames_assessed": 0,
                                         "unscored_pixels": 0})
        row["images"] += 1
        row["frames_evaluated"] += index in counts_of
        row["frames_assessed"] += status == "assessed"
        row["unscored_pixels"] += per_image[-1]["unscored_pixels"]
        if index in counts_of:
            pooled[case] = pooled.get(case, 0) + counts_of[index]
    cases = [{**row, **_scores(pooled.get(case))} for case, row in sorted(per_case.items())]
    return per_image, cases


def latency_basis(config: dict, summary: dict) -> dict:
    """What the latency figures of a validation measure (metrics.json `latency_basis`; the report
    prints it beside them). The span is the ledger's (processing/ledger.py): from the frame's
    entry into the graph to the end of its lane's work at the sink."""
    realtime = bool(config["source"]["realtime"])
    return {
        "pacing": "realtime" if realtime else "as_fast_as_possible",
        "pacing_meaning": (
            "Frames were released at the recording's own timestamps, as a camera delivers them; the wait for "
            "a frame's moment is not counted, so the latency is close to what one camera stream would see on "
            "this machine with this configuration." if realtime else
            "Frames were read as fast as the pipeline took them, so each frame's latency includes the time it "
            "waited behind earlier frames: it shows a backlog, not how late one camera frame would be. Run "
            "with --realtime for camera-like pacing."),
        "from": "the source operator handing the decoded frame to the graph (after the video was read and "
                "decoded" + (", and after the pacing wait)" if realtime else ")"),
        "to": "the end of the frame's lane at the sink: mask, clinical numbers and overlay picture ready, "
              "before anything is written",
        "includes": ["triage and the lane queue", "preprocessing (resize, normalise; upload on a GPU)",
                     "inference", "postprocessing (depth classes, assessability, burn size, triage)",
                     "drawing the overlay", "waiting between these stages"],
        "excludes": ["reading and decoding the video", "writing results.jsonl, the overlay video and masks",
                     "scoring against the ground truth", "a camera's capture and transfer, and the display"],
        "stage_ms_median": summary.get("stage_ms_median") or {},
        "throughput": "frames scored divided by the wall time of the whole replay, start-up (model and graph) "
                      "included" + ("; paced in real time it cannot exceed the recording's frame rate"
                                    if realtime else ""),
        "not_bedside": (
            f"These figures time a recording replayed on this machine ({summary.get('device') or 'device unknown'}, "
            f"{summary.get('backend') or 'backend unknown'} {summary.get('precision') or ''}) with this "
            "configuration. At the bedside a camera delivers one frame at a time at its own rate, capture, transfer "
            "and display add time these figures leave out, and the machine, backend, precision and load may "
            "differ: measure bedside latency on the bedside set-up (holoburn run --realtime with its camera)."),
    }


def validate_once(config: dict, truth: GroundTruth | PairedTruth | DatasetTruth, out_dir: Path, *, probabilities: bool,
                  bootstrap_block: int = 15, readers: dict | None = None) -> tuple[dict, dict, Scorer]:
    from holoburn.app.run.progress import Progress
    from holoburn.app.run.replay import replay

    src = config["source"]
    region = src["body_region"]
    tri = config["triage"]
    scorer = Scorer(truth, region_pct=region_tbsa_pct(region, src["age_years"]) if region else None,
                    policy=TriagePolicy(tri["partial_tbsa_threshold_pct"], tri["min_share_of_skin"]),
                    probabilities=probabilities)
    started = time.monotonic()
    summary = replay(config, [config["source"]["location"]], out_dir, observers=(scorer,), keep_logits=probabilities,
                     progress=Progress("validating", None), readers=readers)
    scorer.finish(summary["frames_in"] - 1)
    metrics = scorer.accumulator.summary(elapsed_s=time.monotonic() - started, block_frames=bootstrap_block)
    if isinstance(truth, PairedTruth):
        metrics["frames"]["masks_without_picture"] = truth.masks_without_picture
    # coverage beside every accuracy figure: the metrics above are over every evaluated frame,
    # these over the frames the pipeline found assessable (the ones a clinician sees numbers for)
    evaluated = metrics["frames"]["evaluated"]
    assessed = evaluated - sum(scorer.not_assessable.values())
    metrics["coverage"] = {"assessed": assessed, "evaluated": evaluated,
                           "share": round(assessed / evaluated, 4) if evaluated else None,
                           "not_assessable": scorer.not_assessable}
    metrics["assessed_frames"] = scorer.assessed.summary(block_frames=bootstrap_block) if assessed else None
    metrics["run"] = {k: summary.get(k) for k in ("source", "model_id", "model_sha256", "backend", "backend_version",
                                                   "precision", "device", "frames_in", "processed", "dropped")}
    metrics["latency_basis"] = latency_basis(config, summary)
    metrics["worst_frames"] = scorer.worst.summary()
    # an imported dataset's truth pixels that no class score can use: burn of unknown depth (6), unknown (255)
    metrics["unscored_truth_pixels"] = scorer.unscored_pixels
    if isinstance(truth, DatasetTruth):
        metrics["dataset"] = {
            "fingerprint": truth.info["fingerprint"]["sha256"], "split": truth.split,
            "images_scored": len(truth.indices), "cases": len({truth.case_of[truth.ids[i]] for i in truth.indices}),
            "images_outside_split": truth.outside_split,
            "labels_without_picture": sorted(truth.scored - set(truth.ids)),
            # a picture named as no image of the dataset: by its name where that is an id, else by frame
            "pictures_without_label": [{"frame": index, "image": name} for index, name in truth.without_label],
        }
        metrics["per_image"], metrics["per_case"] = image_and_case_tables(scorer, truth)
    return metrics, summary, scorer


#: arguments whose values are paths, and what the recorded command shows instead
_PATH_PLACEHOLDERS = {"--masks": "MASKS", "--truth": "DATASET", "--out": "OUT", "--config": "CONFIG",
                      "--model": "MODEL_CARD", "--baseline": "BASELINE", "--save-masks": "MASKS_OUT"}


def shown_arguments(argv: list[str], source: str) -> list[str]:
    """The command line as reports and metrics record it: the source by its opaque id (as in every
    output) and paths by placeholders, since a folder or file name can name a patient."""
    kind = source.split(":", 1)[0] if ":" in source else "video"
    shown, hide_next = [], None
    for arg in argv:
        flag, equals, value = arg.partition("=")
        if hide_next:
            shown.append(hide_next)
            hide_next = None
        elif arg == source or (flag == "--source" and equals):
            shown.append(f"--source={kind}:1" if equals else f"{kind}:1")
        elif equals and flag in _PATH_PLACEHOLDERS:
            shown.append(f"{flag}={_PATH_PLACEHOLDERS[flag]}")
        else:
            shown.append(arg)
            hide_next = _PATH_PLACEHOLDERS.get(arg)
    return shown


def run_validate(args) -> int:
    from holoburn.app.run.replay import parse_lane_spec
    from holoburn.app.run.sources import open_reader, parse_source

    dataset = None
    if args.truth:  # an imported dataset: its own images unless --source names others
        dataset = DatasetTruth(args.truth, args.split)
        source = args.source or f"image:{dataset.path / 'images'}"
        if parse_source(parse_lane_spec(source, "ROUTINE")[0])[0] != "image":
            raise BadInput(f"--truth pairs pictures with {args.truth}'s labels by id: give --source image:DIR, or "
                           "leave --source out to validate on the dataset's own images")
    elif args.split:
        raise BadInput(f"--split {args.split} picks images of a dataset: give --truth DATASET instead of --masks")
    elif not args.source:
        raise BadInput(f"--masks {args.masks} needs --source (the recording or pictures the masks belong to)")
    else:
        source = args.source
    location = parse_lane_spec(source, "ROUTINE")[0]
    pictures = parse_source(location)[0] == "image"  # masks paired by name, once the pictures are listed
    truth = None if pictures else GroundTruth(args.masks)
    out = Path(args.out)
    precisions = [p.strip() for p in args.compare.split(",")] if args.compare else [args.precision or "fp32"]
    command = "holoburn validate " + " ".join(shlex.quote(a) for a in shown_arguments(sys.argv[2:], source))
    by_precision, scorers, summaries = {}, {}, {}
    for precision in precisions:
        config = load_config(args.config, {
            "source.location": source, "source.max_frames": args.max_frames,
            "source.body_region": args.body_region, "source.realtime": args.realtime, "inference.model": args.model,
            "inference.backend": args.backend, "inference.precision": precision,
        })
        run_dir = out / precision if len(precisions) > 1 else out
        readers = None
        if dataset:
            from holoburn.media.images import ImageReader

            reader = open_reader(location, config, source_id="image:1")
            run = dataset.pair(reader.relative_names())  # a dataset's other splits are not run
            truth = dataset
            readers = {source: ImageReader(reader.location, reader.fps, reader.name,
                                           listed=(reader.root, [reader.files[k] for k in run]))}
        elif pictures:
            reader = open_reader(location, config, source_id="image:1")
            truth, readers = PairedTruth(args.masks, reader.relative_names()), {source: reader}
        metrics, summary, scorer = validate_once(config, truth, run_dir, probabilities=not args.no_auc,
                                                 bootstrap_block=args.bootstrap_block, readers=readers)
        by_precision[precision], scorers[precision], summaries[precision] = metrics, scorer, summary
    main = precisions[0]
    metrics = by_precision[main]
    comparison = compare_precisions(by_precision) if len(precisions) > 1 and "fp32" in by_precision else None
    if comparison:
        metrics["precision_comparison"] = comparison
    baseline = json.loads(Path(args.baseline).read_text()) if args.baseline else None
    drops = compare_to_baseline(metrics, baseline, args.threshold) if baseline else []
    metrics["baseline"] = {"path": args.baseline, "threshold_points": args.threshold, "drops": drops} if baseline else None
    metrics["command"] = command
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    from holoburn.engines.card import load_card

    card = load_card(args.model)
    report = write_report(out, metrics, model_card=card.raw, command=command,
                          backend={k: summaries[main].get(k) for k in ("backend", "backend_version", "precision", "device")},
                          worst=scorers[main].worst, baseline=baseline,
                          threshold_points=args.threshold, precision_comparison=comparison)
    _print_metrics(metrics, out, report, drops, args.threshold)
    return 1 if drops else 0


def _print_metrics(metrics: dict, out: Path, report: Path, drops: list, threshold: float) -> None:
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    pooled = metrics["pixel_pooled"] if "pixel_pooled" in metrics else None
    print()
    if pooled:
        any_burn = pooled.get("any_burn", {})
        print(f"  any burn: Dice {pct(any_burn.get('dice'))}, sensitivity {pct(any_burn.get('sensitivity'))}, "
              f"specificity {pct(any_burn.get('specificity'))} (pixel-pooled)")
    frames = metrics["frames"]
    print(f"  frames evaluated: {frames['evaluated']}")
    for key, what in (("missing_truth", "frames without ground truth (not scored)"),
                      ("extra_truth", "ground-truth masks with no frame")):
        if frames[key]:
            shown = ", ".join(map(str, frames[key][:10])) + (" ..." if len(frames[key]) > 10 else "")
            print(f"  WARNING: {len(frames[key])} {what}: {shown}")
    if frames.get("masks_without_picture"):
        print(f"  WARNING: {frames['masks_without_picture']} ground-truth masks named as no picture of the source")
    dataset = metrics.get("dataset")
    if dataset:
        within = f"split {dataset['split']}, " if dataset["split"] else ""
        print(f"  dataset: {within}{dataset['images_scored']} image(s) of {dataset['cases']} case(s); "
              f"{dataset['images_outside_split']} picture(s) of other splits not run")
        unlabelled = dataset["pictures_without_label"]
        if unlabelled:
            shown = ", ".join(p["image"] or f"frame {p['frame']}" for p in unlabelled[:10])
            print(f"  WARNING: {len(unlabelled)} pictures have no label in the dataset (not scored): {shown}"
                  + (" ..." if len(unlabelled) > 10 else ""))
        if dataset["labels_without_picture"]:
            shown = ", ".join(dataset["labels_without_picture"][:10])
            print(f"  WARNING: {len(dataset['labels_without_picture'])} labels of the dataset have no picture in "
                  f"the source: {shown}" + (" ..." if len(dataset["labels_without_picture"]) > 10 else ""))
        print(f"  {'case':<12} {'images':>6} {'assessed':>8} {'any-burn Dice':>13} {'depth Dice':>10} {'unscored px':>11}")
        for row in metrics["per_case"][:20]:
            print(f"  {row['case']:<12} {row['images']:>6} {row['frames_assessed']:>8} {pct(row['any_burn_dice']):>13} "
                  f"{pct(row['mean_depth_dice']):>10} {row['unscored_pixels']:>11}")
        if len(metrics["per_case"]) > 20:
            print(f"  ... {len(metrics['per_case']) - 20} more cases in metrics.json (per_case) and the report")
    for reason, indices in frames["not_evaluated"].items():
        print(f"  WARNING: {len(indices)} frames not processed ({reason}), not scored")
    print(f"  metrics  {out / 'metrics.json'}\n  report   {report}")
    if drops:
        print(f"\n  DRIFT: {len(drops)} metric(s) dropped more than {threshold} points against the baseline:")
        for d in drops:
            print(f"    {d}")
