"""`holoburn dataset import`: a source dataset -> DEST in the one layout (package docstring).

Every sample is read and checked before DEST exists: the import is written into a hidden folder
beside DEST and renamed to DEST at the end, so DEST holds a whole import or nothing.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
from PIL import Image

from holoburn.app.datasets.labels import DATASET_CLASSES, MEANINGS, TARGETS, LabelMap
from holoburn.app.datasets.sources import KINDS, READERS, Sample, SampleProblem, read_picture, shown
from holoburn.clinical.depth import CLASS_NAMES
from holoburn.clinical.errors import BadConfig, BadInput
from holoburn.processing.files import FULL, OutputFull, write_json

LAYOUT_VERSION = 1
SOURCE_MAP = "source_map.IDENTIFIERS.json"
#: the form of every image id _finish() gives: case<number>_<number> (opaque: names no patient)
IMAGE_ID = re.compile(r"case\d+_\d+")
FINGERPRINT_RULE = ("sha256 over one line '<folder>/<file> <sha256 of the file>\\n' for every file in "
                    "images/ and labels/, sorted by folder then file name")


class DatasetProblems(BadInput):
    """The source has problems and --skip-bad was not given: the message is the whole table."""

    def __init__(self, src: Path, problems: list[SampleProblem]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {src}; nothing was "
                         f"written. Fix them, or pass --skip-bad to import the rest:\n{problem_table(problems)}")


def problem_table(problems: list[SampleProblem]) -> str:
    """One row per problem, by kind then file: kind, file, what is wrong."""
    rows = sorted(problems, key=lambda p: (KINDS.index(p.kind) if p.kind in KINDS else len(KINDS), p.file))
    kind_w = max([len("problem")] + [len(p.kind) for p in rows])
    file_w = min(60, max([len("file")] + [len(p.file) for p in rows]))
    lines = [f"  {'problem':<{kind_w}}  {'file':<{file_w}}  what", f"  {'-' * kind_w}  {'-' * file_w}  ----"]
    lines += [f"  {p.kind:<{kind_w}}  {p.file:<{file_w}}  {p.detail}" for p in rows]
    return "\n".join(lines)


@dataclass
class Imported:
    """What an import wrote: DEST, how many images and cases, what it skipped, its fingerprint."""

    dest: Path
    images: int
    cases: int
    fingerprint: str
    skipped: list[SampleProblem] = field(default_factory=list)


# ----------------------------------------------------------------------------- cases


def case_finder(cases_file: Path | None = None, pattern: str | None = None) -> tuple[Callable[[str], str], dict]:
    """How an image's name (Sample.name) gives its case, and how dataset.json describes that.

    The returned function raises SampleProblem('no_case') for a name the table or pattern does
    not cover; a bad table or pattern is BadConfig, named with its line."""
    if cases_file is not None and pattern is not None:
        raise BadConfig("give --cases or --case-pattern, not both")
    if pattern is not None:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise BadConfig(f"--case-pattern {pattern!r} is not a regular expression: {exc}") from None

        def by_pattern(name: str) -> str:
            match = compiled.search(name)
            if not match:
                raise SampleProblem("no_case", name, f"--case-pattern {pattern!r} does not match this name")
            if "case" in compiled.groupindex:
                found = match.group("case")
            else:
                found = match.group(1) if compiled.groups else match.group(0)
            if not found:
                raise SampleProblem("no_case", name, f"--case-pattern {pattern!r} finds an empty case in this name")
            return found

        return by_pattern, {"from": "pattern", "pattern": pattern}
    if cases_file is not None:
        table = _read_cases(Path(cases_file))

        def by_table(name: str) -> str:
            if name not in table:
                raise SampleProblem("no_case", name, f"{cases_file} has no row with image {name!r}")
            return table[name]

        return by_table, {"from": "table"}
    return (lambda name: name), {"from": "one case per image"}


def _read_cases(path: Path) -> dict[str, str]:
    """--cases CSV: a header with the columns image and case, then one row per image."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            columns = rows[0].keys() if rows else []
    except OSError as exc:
        raise BadConfig(f"cannot read the case table {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadConfig(f"the case table {path} is not CSV text: {exc}") from None
    if not {"image", "case"} <= set(columns):
        raise BadConfig(f"the case table {path} needs a header with the columns 'image' and 'case' "
                        f"(found: {', '.join(c for c in columns if c) or 'none'})")
    table: dict[str, str] = {}
    for line, row in enumerate(rows, 2):
        image, case = (row.get("image") or "").strip(), (row.get("case") or "").strip()
        if not image or not case:
            raise BadConfig(f"{path}, line {line}: a row needs both an image and a case")
        if table.get(image, case) != case:
            raise BadConfig(f"{path}, line {line}: {image!r} is given the cases {table[image]!r} and {case!r}")
        table[image] = case
    return table


# ----------------------------------------------------------------------------- one sample


@dataclass
class _Converted:
    sample: Sample
    case: str
    size: tuple[int, int]  # (width, height)
    pixels: dict[str, int]  # class name -> pixels of that class
    label_map: dict[str, str]  # source label -> class name, for the labels this image holds


def _picture(sample: Sample, root: Path) -> np.ndarray:
    """The sample's image, (H, W, 3) uint8: its one file, or its channels stacked (nnU-Net)."""
    if len(sample.images) == 1:
        return read_picture(sample.images[0], shown(sample.images[0], root))
    channels = [read_picture(path, shown(path, root), grey=True) for path in sample.images]
    for path, channel in zip(sample.images[1:], channels[1:]):
        if channel.shape != channels[0].shape:
            raise SampleProblem("size_mismatch", shown(path, root), f"this channel is {_wxh(channel.shape)}, "
                                f"channel 0000 is {_wxh(channels[0].shape)}")
    if len(channels) != 3:
        raise SampleProblem("unreadable", shown(sample.images[0], root), f"{len(channels)} channels; holoburn "
                            f"takes one RGB file or three grey ones (R, G, B)")
    return np.stack(channels, axis=2)


def _wxh(shape) -> str:
    return f"{shape[1]}x{shape[0]}"


def _convert(sample: Sample, labels: LabelMap, root: Path) -> tuple[np.ndarray, np.ndarray, dict[str, int], dict[str, str]]:
    """Reads and checks one sample: (image (H, W, 3) uint8, classes (H, W) uint8, pixels per
    class name, label map used). Raises SampleProblem naming the file at fault."""
    image = _picture(sample, root)
    height, width = image.shape[:2]
    image_shown = shown(sample.images[0], root)
    if sample.declared_size and tuple(sample.declared_size) != (height, width):
        raise SampleProblem("size_mismatch", image_shown, f"{sample.mask_file} says "
                            f"{sample.declared_size[1]}x{sample.declared_size[0]}, the image is {width}x{height}")
    source = sample.read_labels(height, width)
    if source.index.shape != (height, width):
        raise SampleProblem("size_mismatch", sample.mask_file, f"the mask is {_wxh(source.index.shape)}, its image "
                            f"{image_shown} is {width}x{height}; masks must match their image pixel for pixel")
    counts = np.bincount(source.index.ravel(), minlength=len(source.labels))
    lookup = np.zeros(len(source.labels), np.uint8)
    unknown, used = [], {}
    for slot, label in enumerate(source.labels):
        if not counts[slot]:
            continue
        value = labels.class_of(label)
        if value is None:
            unknown.append(label.described(int(counts[slot])))
            continue
        lookup[slot] = value
        used[label.key] = DATASET_CLASSES[value]
    if unknown:
        where = f"--labels {labels.path}" if labels.path else "the default label map (no --labels)"
        raise SampleProblem("unknown_label", sample.mask_file, f"label {', '.join(unknown)} not in {where}; map "
                            f"each to a class, burn_unspecified or unknown")
    classes = lookup[source.index]
    per_class = np.bincount(classes.ravel(), minlength=256)
    pixels = {DATASET_CLASSES[v]: int(per_class[v]) for v in sorted(DATASET_CLASSES) if per_class[v]}
    return image, classes, pixels, used


# ----------------------------------------------------------------------------- the import


def import_dataset(src: Path, dest: Path, fmt: str, *, labels: LabelMap | None = None,
                   case_of: tuple[Callable[[str], str], dict] | None = None, skip_bad: bool = False,
                   images_dir: Path | None = None, progress: Callable[[int, int], None] | None = None) -> Imported:
    """Imports `src` of format `fmt` (sources.READERS) into the new folder `dest`.

    Raises DatasetProblems (exit 2) listing every problem unless `skip_bad`; BadInput where
    `src` is not of `fmt`, `dest` is not new or empty, or nothing is left to import."""
    src, dest = Path(src), Path(dest)
    if fmt not in READERS:
        raise BadInput(f"unknown format {fmt!r}: one of {', '.join(READERS)}")
    if not src.exists():
        raise BadInput(f"{src} does not exist")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BadInput(f"{dest} exists and is not an empty folder; give a new folder for the import")
    labels = labels or LabelMap()
    find_case, case_rule = case_of or case_finder()
    found = READERS[fmt](src, images_dir)
    problems = list(found.problems)
    cases: dict[int, str] = {}
    for number, sample in enumerate(found.samples):
        try:
            cases[number] = find_case(sample.name)
        except SampleProblem as problem:
            problem.file = shown(sample.images[0], found.root)
            problems.append(problem)

    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = dest.parent / f".{dest.name}.importing-{secrets.token_hex(4)}"
    try:
        (stage / "images").mkdir(parents=True)
        (stage / "labels").mkdir()
        converted: dict[int, _Converted] = {}
        for done, (number, case) in enumerate(cases.items(), 1):
            sample = found.samples[number]
            try:
                image, classes, pixels, used = _convert(sample, labels, found.root)
            except SampleProblem as problem:
                problems.append(problem)
                continue
            if not problems or skip_bad:  # once the import cannot succeed, only checking goes on
                _write_png(image, stage / "images" / f"{number}.png", dest)
                _write_png(classes, stage / "labels" / f"{number}.png", dest)
            converted[number] = _Converted(sample, case, (image.shape[1], image.shape[0]), pixels, used)
            if progress:
                progress(done, len(cases))
        if problems and not skip_bad:
            raise DatasetProblems(src, problems)
        if not converted:
            raise BadInput(f"nothing to import from {src}: no image with a mask was found"
                           + (f"\n{problem_table(problems)}" if problems else ""))
        imported = _finish(stage, dest, fmt, found.root, converted, problems, case_rule)
        if dest.exists():
            dest.rmdir()  # empty: checked above
        os.replace(stage, dest)
        return imported
    except OSError as exc:  # reading is checked per file above: this is writing DEST
        shutil.rmtree(stage, ignore_errors=True)
        raise BadInput(f"cannot write the import to {dest}: {exc.strerror or exc}; nothing was kept") from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _write_png(pixels: np.ndarray, path: Path, dest: Path) -> None:
    try:
        Image.fromarray(pixels).save(path, format="PNG")
    except OSError as exc:
        if exc.errno in FULL:
            raise OutputFull(f"cannot write the import to {dest}: {os.strerror(exc.errno)}; nothing was kept") from None
        raise BadInput(f"cannot write the import to {dest}: {exc.strerror or exc}") from None


def fingerprint(folder: Path) -> str:
    """sha256 of the dataset's images/ and labels/ (FINGERPRINT_RULE)."""
    digest = hashlib.sha256()
    for sub in ("images", "labels"):
        for path in sorted((Path(folder) / sub).iterdir(), key=lambda p: p.name):
            digest.update(f"{sub}/{path.name} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


def _finish(stage: Path, dest: Path, fmt: str, root: Path, converted: dict[int, _Converted],
            skipped: list[SampleProblem], case_rule: dict) -> Imported:
    """Gives the staged files their opaque ids; writes dataset.json and the source map."""
    case_names = sorted({c.case for c in converted.values()})
    case_width = max(4, len(str(len(case_names))))
    case_ids = {name: f"case{i:0{case_width}d}" for i, name in enumerate(case_names, 1)}
    per_case: dict[str, list[int]] = {}
    for number, item in sorted(converted.items(), key=lambda kv: kv[1].sample.name):
        per_case.setdefault(item.case, []).append(number)
    image_width = max(3, len(str(max(len(v) for v in per_case.values()))))
    images, identifiers, label_map = {}, {}, {}
    for case in case_names:
        for n, number in enumerate(per_case[case], 1):
            item = converted[number]
            image_id = f"{case_ids[case]}_{n:0{image_width}d}"
            for sub in ("images", "labels"):
                os.replace(stage / sub / f"{number}.png", stage / sub / f"{image_id}.png")
            images[image_id] = {"case": case_ids[case], "size": list(item.size), "pixels": item.pixels}
            identifiers[image_id] = {"name": item.sample.name, "case": case,
                                     "files": [shown(p, root) for p in item.sample.images],
                                     "labels": item.sample.mask_file}
            label_map.update(item.label_map)
    images = dict(sorted(images.items()))
    value = fingerprint(stage)
    description = {
        "description": "holoburn dataset (layout of holoburn.app.datasets): images/<id>.png RGB uint8, "
                       "labels/<id>.png uint8 label value per pixel",
        "layout_version": LAYOUT_VERSION,
        "created_by": f"holoburn {version('holoburn')} dataset import",
        "source_format": fmt,
        "channel_names": {"0": "R", "1": "G", "2": "B"},
        "file_ending": ".png",
        "labels": dict(TARGETS),
        "holoburn_classes": list(CLASS_NAMES),
        "meanings": MEANINGS,
        "label_map": dict(sorted(label_map.items())),
        "cases_from": case_rule,
        "numTraining": len(images),
        "num_cases": len(case_names),
        "skipped": len(skipped),
        "images": images,
        "fingerprint": {"sha256": value, "over": FINGERPRINT_RULE},
    }
    write_json(stage / "dataset.json", description)
    write_json(stage / SOURCE_MAP, {
        "identifying": "original file, folder and case names: keep this file with the source data, never "
                       "with a copy of the dataset you share",
        "source": str(root.resolve()),
        "format": fmt,
        "cases": {case_ids[c]: c for c in case_names},
        "images": identifiers,
        "skipped": [{"problem": p.kind, "file": p.file, "what": p.detail} for p in skipped],
    }, mode=0o600)
    return Imported(dest, len(images), len(case_names), value, list(skipped))
