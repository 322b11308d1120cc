"""Reading the four source formats (package docstring) into one list of samples.

A reader pairs images with their labels by name alone and reports what it cannot pair (an image
without a mask, a mask without an image, two files with one id); pixels are read later, one
sample at a time, by the importer. Every problem names the file as the user sees it: its path
under SRC.
"""
from __future__ import annotations

import json
import re
import warnings
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from holoburn.app.datasets.labels import SourceLabel
from holoburn.clinical.errors import BadInput

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
#: what Pillow raises for a file that is not a picture, is damaged or truncated, or too large
PICTURE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class SampleProblem(BadInput):
    """One sample cannot be imported. `kind` is the table's first column (below), `file` the
    file to look at (its path under SRC), `detail` what is wrong and what to do."""

    def __init__(self, kind: str, file: str, detail: str):
        super().__init__(f"{file}: {kind}: {detail}")
        self.kind, self.file, self.detail = kind, file, detail


#: problem kinds, in the order the table lists them
KINDS = ("unreadable", "duplicate_id", "missing_mask", "missing_image", "size_mismatch",
         "unknown_label", "unsupported_shape", "no_case")


@dataclass
class SourceMask:
    """A sample's labels as the source gives them: `index` (H, W) int32 indexes `labels`."""

    labels: list[SourceLabel]
    index: np.ndarray


@dataclass
class Sample:
    """One image and its labels, paired by name, pixels not read yet.

    name: the image's name in the source (path under images/, COCO file_name, CVAT name,
    nnU-Net case identifier): what --cases and --case-pattern match. images: one picture, or one
    grey picture per channel (nnU-Net). read_labels(height, width) -> SourceMask, or raises
    SampleProblem. mask_file: what a message names for the labels. declared_size: the (height,
    width) the annotation file states, where it states one.
    """

    name: str
    images: tuple[Path, ...]
    read_labels: Callable[[int, int], SourceMask]
    mask_file: str
    declared_size: tuple[int, int] | None = None


@dataclass
class Found:
    """What a reader found: the samples it could pair, and the problems of the rest."""

    samples: list[Sample] = field(default_factory=list)
    problems: list[SampleProblem] = field(default_factory=list)
    root: Path = Path(".")  # what file names are shown relative to


def shown(path: Path, root: Path) -> str:
    """`path` as the user sees it: relative to SRC where it lies under it."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------- pixels


def read_picture(path: Path, shown_as: str, grey: bool = False) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, or (H, W) uint8 with `grey`, turned upright by its
    EXIF orientation (as a viewer, and so the annotator, showed it)."""
    try:
        with Image.open(path) as picture:
            picture = ImageOps.exif_transpose(picture)
            if picture.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: keep the top 8 bits
                values = np.asarray(picture).astype(np.uint32)
                grey8 = (values >> 8 if values.max(initial=0) > 255 else values).astype(np.uint8)
                return grey8 if grey else np.repeat(grey8[..., None], 3, axis=2)
            return np.asarray(picture.convert("L" if grey else "RGB"))
    except PICTURE_ERRORS as exc:
        raise SampleProblem("unreadable", shown_as, f"not a readable picture ({_reason(exc)})") from None


def read_mask_pixels(path: Path, shown_as: str) -> np.ndarray:
    """A mask file's values: (H, W) integers (grey, palette index, 1-bit as 0/1), or (H, W, 3)
    uint8 where the mask is in colour."""
    try:
        with Image.open(path) as picture:
            picture.load()
            if picture.mode in ("RGB", "RGBA"):
                colours = np.asarray(picture)[..., :3]
                same = (colours[..., 0] == colours[..., 1]).all() and (colours[..., 1] == colours[..., 2]).all()
                return colours[..., 0].copy() if same else colours
            if picture.mode in ("LA", "PA"):
                return np.asarray(picture)[..., 0].copy()
            values = np.asarray(picture)
            return values.astype(np.uint8) if values.dtype == bool else values
    except PICTURE_ERRORS as exc:
        raise SampleProblem("unreadable", shown_as, f"not a readable mask ({_reason(exc)})") from None


def read_label_values(path: Path, shown_as: str, why_grey: str) -> np.ndarray:
    """A mask file's (H, W) label values; a colour mask is the problem `why_grey` explains."""
    values = read_mask_pixels(path, shown_as)
    if values.ndim == 3:
        raise SampleProblem("unknown_label", shown_as, why_grey)
    return values


def _reason(exc: BaseException) -> str:
    text = str(exc).split(" (")[0] if isinstance(exc, Image.DecompressionBombError) else str(exc)
    return text or type(exc).__name__


def values_mask(values: np.ndarray, names: dict[int, str] | None = None) -> SourceMask:
    """A grey mask of label values -> SourceMask; `names` gives a value its source name."""
    names = names or {}
    if values.dtype in (np.uint8, np.uint16):  # counting beats sorting for small value ranges
        present = np.flatnonzero(np.bincount(values.ravel()))
        lookup = np.zeros(int(values.max(initial=0)) + 1, np.int32)
        lookup[present] = np.arange(len(present), dtype=np.int32)
        index = lookup[values]
    else:
        present, inverse = np.unique(values, return_inverse=True)
        index = inverse.reshape(values.shape).astype(np.int32)
    return SourceMask([SourceLabel(int(v), names.get(int(v))) for v in present], index)


# ----------------------------------------------------------------------------- pairing by name


def _by_key(root: Path, suffixes: tuple[str, ...], strip: str = "") -> dict[str, list[Path]]:
    """Files under `root` with one of `suffixes` (hidden ones passed over), by their path
    without suffix (and without a trailing `strip`, e.g. `_mask`)."""
    found: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in suffixes:
            continue
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        key = path.relative_to(root).with_suffix("").as_posix()
        if strip and key.endswith(strip):
            key = key[: -len(strip)]
        found[key].append(path)
    return found


def _pair(found: Found, images: dict[str, list[Path]], masks: dict[str, list[Path]],
          make: Callable[[str, Path, Path], Sample], mask_hint: Callable[[str], str]) -> None:
    """Pairs images and masks of one key; reports duplicates and the unpaired."""
    for kind, files in (("image", images), ("mask", masks)):
        for key, paths in files.items():
            if len(paths) > 1:
                others = ", ".join(shown(p, found.root) for p in paths)
                for path in paths:
                    found.problems.append(SampleProblem(
                        "duplicate_id", shown(path, found.root),
                        f"{len(paths)} {kind}s have the id {key!r} ({others}); keep one"))
    for key, paths in images.items():
        if key not in masks:
            found.problems.append(SampleProblem("missing_mask", shown(paths[0], found.root),
                                                f"no mask for this image (looked for {mask_hint(key)})"))
    for key, paths in masks.items():
        if key not in images:
            found.problems.append(SampleProblem("missing_image", shown(paths[0], found.root),
                                                f"no image for this mask (id {key!r})"))
    for key in sorted(images.keys() & masks.keys()):
        if len(images[key]) == 1 and len(masks[key]) == 1:
            found.samples.append(make(key, images[key][0], masks[key][0]))


# ----------------------------------------------------------------------------- folder


def read_folder(src: Path, images_dir: Path | None = None) -> Found:
    """SRC/images + SRC/masks (or SRC/labels): masks of label values, paired by path."""
    src = Path(src)
    image_root = Path(images_dir) if images_dir else src / "images"
    mask_root = next((src / name for name in ("masks", "labels") if (src / name).is_dir()), None)
    if not image_root.is_dir() or mask_root is None:
        raise BadInput(f"{src} is not a 'folder' dataset: it needs an images/ folder and a masks/ "
                       f"(or labels/) folder, a mask named like its image (a.jpg -> a.png or a_mask.png)")
    found = Found(root=src)
    images = _by_key(image_root, IMAGE_SUFFIXES)
    masks = _by_key(mask_root, MASK_SUFFIXES + (".jpg", ".jpeg", ".webp"), strip="_mask")

    def make(key: str, image: Path, mask: Path) -> Sample:
        mask_shown = shown(mask, src)

        def read_labels(height: int, width: int) -> SourceMask:
            return values_mask(read_label_values(mask, mask_shown, "the mask is in colour; a 'folder' mask holds "
                                                 "label values (grey or palette); export it as class indices"))

        return Sample(image.relative_to(image_root).as_posix(), (image,), read_labels, mask_shown)

    _pair(found, images, masks, make,
          lambda key: f"{shown(mask_root, src)}/{key}.png or {shown(mask_root, src)}/{key}_mask.png")
    return found


# ----------------------------------------------------------------------------- nnU-Net v2


def _load_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{what} {path} is not JSON: {exc}") from None


def read_nnunet(src: Path, images_dir: Path | None = None) -> Found:
    """An nnU-Net v2 2D dataset: dataset.json, imagesTr/CASE_XXXX<ending>, labelsTr/CASE<ending>."""
    src = Path(src)
    description = src / "dataset.json"
    if not description.is_file() or not (src / "imagesTr").is_dir() or not (src / "labelsTr").is_dir():
        raise BadInput(f"{src} is not an nnU-Net v2 dataset: it needs dataset.json, imagesTr/ and labelsTr/")
    info = _load_json(description, "the nnU-Net dataset.json")
    if not isinstance(info, dict) or not isinstance(info.get("labels"), dict):
        raise BadInput(f"{description} has no 'labels' mapping (name -> value)")
    names: dict[int, str] = {}
    for name, value in info["labels"].items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadInput(f"{description}: label {name!r} is {value!r}; region-based labels (lists) are not "
                           f"supported, give each label one value")
        names[value] = name
    ending = info.get("file_ending", ".png")
    channels = info.get("channel_names") or {"0": "RGB"}
    found = Found(root=src)
    by_case: dict[str, dict[int, Path]] = defaultdict(dict)
    for path in sorted((src / "imagesTr").iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        match = re.fullmatch(r"(.+)_(\d{4})" + re.escape(ending), path.name)
        if not match:
            found.problems.append(SampleProblem("unreadable", shown(path, src),
                                                f"not named CASE_XXXX{ending} (e.g. burn_001_0000{ending})"))
            continue
        by_case[match.group(1)][int(match.group(2))] = path
    labels = {p.name[: -len(ending)]: p for p in sorted((src / "labelsTr").iterdir())
              if p.is_file() and not p.name.startswith(".") and p.name.endswith(ending)}
    for case, files in sorted(by_case.items()):
        first = shown(next(iter(files.values())), src)
        wanted = set(range(len(channels)))
        if case not in labels:
            found.problems.append(SampleProblem("missing_mask", first, f"no labelsTr/{case}{ending}"))
        elif set(files) != wanted and not (len(files) == 1 and 0 in files):
            missing = sorted(wanted - set(files))
            found.problems.append(SampleProblem(
                "missing_image", first, f"case {case!r} has channels {sorted(files)}, dataset.json names "
                f"{len(channels)}" + (f" (missing {', '.join(f'{c:04d}' for c in missing)})" if missing else "")))
        else:
            found.samples.append(_nnunet_sample(case, files, labels[case], src, names))
    for case, path in sorted(labels.items()):
        if case not in by_case:
            found.problems.append(SampleProblem("missing_image", shown(path, src), f"no imagesTr/{case}_0000{ending}"))
    return found


def _nnunet_sample(case: str, files: dict[int, Path], label_file: Path, src: Path, names: dict[int, str]) -> Sample:
    mask_shown = shown(label_file, src)

    def read_labels(height: int, width: int) -> SourceMask:
        values = read_label_values(label_file, mask_shown, "the label file is in colour; nnU-Net labels are "
                                   "one value per pixel")
        return values_mask(values, names)

    return Sample(case, tuple(files[c] for c in sorted(files)), read_labels, mask_shown)


# ----------------------------------------------------------------------------- COCO


def _one_file(src: Path, patterns: tuple[str, ...], what: str) -> Path:
    if src.is_file():
        return src
    candidates = sorted({p for pattern in patterns for p in src.glob(pattern) if p.is_file()})
    if len(candidates) != 1:
        listed = ", ".join(shown(p, src) for p in candidates) or "none"
        raise BadInput(f"{src} must hold exactly one {what} (found: {listed}); give the file itself as SRC")
    return candidates[0]


def _image_file(name: str, folders: list[Path]) -> Path | None:
    return next((folder / name for folder in folders if (folder / name).is_file()), None)


def rle_counts(counts) -> list[int]:
    """COCO RLE counts: a list of run lengths, or the compressed string (pycocotools' rleFrString:
    5 bits a character, offset 48, each count after the second stored as the difference from the
    count two before). Raises ValueError for a malformed string."""
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise ValueError("counts must be non-negative integers")
        return counts
    if not isinstance(counts, str):
        raise ValueError("counts must be a list or a string")
    data = counts.encode("ascii", "replace")
    out: list[int] = []
    position = 0
    while position < len(data):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(data):
                raise ValueError("counts string ends inside a number")
            chunk = data[position] - 48
            if not 0 <= chunk < 64:
                raise ValueError(f"character {chr(data[position])!r} cannot be in a counts string")
            value |= (chunk & 0x1F) << (5 * shift)
            more = bool(chunk & 0x20)
            position += 1
            shift += 1
            if not more and chunk & 0x10:
                value |= -1 << (5 * shift)
        if len(out) > 2:
            value += out[-2]
        if value < 0:
            raise ValueError("a run length is negative")
        out.append(value)
    return out


def rle_bits(counts: list[int], height: int, width: int, order: str) -> np.ndarray:
    """Alternating runs of 0 and 1 (starting with 0) -> (height, width) bool; `order` 'F' is COCO
    (column by column), 'C' is CVAT (row by row). The runs must cover the area exactly."""
    if sum(counts) != height * width:
        raise ValueError(f"its runs cover {sum(counts)} pixels, not {height} x {width} = {height * width}")
    flat = np.repeat(np.arange(len(counts)) % 2 == 1, counts)
    return flat.reshape((height, width), order=order)


def polygon_bits(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Polygons [x1, y1, x2, y2, ...] in pixels -> (height, width) bool, rasterised as COCO's own
    tools do (pycocotools), so COCO and CVAT polygons give the pixels COCO evaluation uses."""
    from pycocotools import mask as coco_mask

    for polygon in polygons:
        if (not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in polygon)):
            raise ValueError("a polygon is a list of at least 3 x, y pairs of numbers")
    runs = coco_mask.frPyObjects([[float(v) for v in p] for p in polygons], height, width)
    with warnings.catch_warnings():  # pycocotools 2.0.x calls np.array(copy=False), which NumPy 2 warns of
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode(coco_mask.merge(runs)).astype(bool)


def read_coco(src: Path, images_dir: Path | None = None) -> Found:
    """A COCO JSON with its images; unannotated pixels are the label 'unannotated' (background by
    default); annotations are drawn in file order, a later one over an earlier one."""
    src = Path(src)
    annotations_file = _one_file(src, ("*.json", "annotations/*.json"), "COCO JSON file")
    root = src if src.is_dir() else src.parent
    coco = _load_json(annotations_file, "the COCO file")
    shown_json = shown(annotations_file, root)
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations", "categories")):
        raise BadInput(f"{annotations_file} is not COCO: it needs the lists 'images', 'annotations' and 'categories'")
    categories: dict[int, str] = {}
    for category in coco["categories"]:
        if not isinstance(category, dict) or not isinstance(category.get("id"), int) or category["id"] in categories:
            raise BadInput(f"{annotations_file}: category {category!r} has no id, or one another category has")
        categories[category["id"]] = str(category.get("name", category["id"]))
    folders = [Path(images_dir)] if images_dir else [annotations_file.parent, annotations_file.parent / "images",
                                                      annotations_file.parent.parent / "images", root / "images"]
    found = Found(root=root)
    entries: dict[object, dict] = {}
    by_name: dict[str, list[dict]] = defaultdict(list)
    for entry in coco["images"]:
        if (not isinstance(entry, dict) or not isinstance(entry.get("id"), (int, str))
                or not isinstance(entry.get("file_name"), str)):
            found.problems.append(SampleProblem("unreadable", shown_json, f"image entry {entry!r} has no id or file_name"))
            continue
        by_name[entry["file_name"]].append(entry)
        entries.setdefault(entry["id"], entry)
    ids = defaultdict(list)
    for entry in (e for group in by_name.values() for e in group):
        ids[entry["id"]].append(entry["file_name"])
    bad_ids = {i for i, names in ids.items() if len(names) > 1}
    per_image: dict[object, list[dict]] = defaultdict(list)
    for annotation in coco["annotations"]:
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        if not isinstance(image_id, (int, str)) or image_id not in entries:
            found.problems.append(SampleProblem(
                "missing_image", shown_json, f"annotation {annotation.get('id') if isinstance(annotation, dict) else '?'} "
                f"is for image id {image_id!r}, which 'images' does not list"))
            continue
        per_image[annotation["image_id"]].append(annotation)
    for name, group in sorted(by_name.items()):
        if len(group) > 1 or group[0]["id"] in bad_ids:
            detail = (f"{len(group)} image entries have this file_name" if len(group) > 1
                      else f"image id {group[0]['id']!r} is given to {', '.join(ids[group[0]['id']])}")
            found.problems.append(SampleProblem("duplicate_id", name, f"{detail} in {shown_json}; keep one"))
            continue
        entry = group[0]
        path = _image_file(name, folders)
        if path is None:
            found.problems.append(SampleProblem("missing_image", name, f"listed in {shown_json}, no such file in "
                                                f"{', '.join(shown(f, root) or '.' for f in folders)}"))
        elif not per_image.get(entry["id"]):
            found.problems.append(SampleProblem("missing_mask", shown(path, root), f"no annotation in {shown_json} "
                                                f"(an image with nothing to mark still needs one, e.g. its skin)"))
        else:
            found.samples.append(_coco_sample(name, path, entry, per_image[entry["id"]], categories, shown_json))
    return found


def _declared(entry: dict) -> tuple[int, int] | None:
    height, width = entry.get("height"), entry.get("width")
    return (height, width) if isinstance(height, int) and isinstance(width, int) else None


def _coco_sample(name: str, path: Path, entry: dict, annotations: list[dict], categories: dict[int, str],
                 shown_json: str) -> Sample:
    where = f"{shown_json}: {name}"

    def read_labels(height: int, width: int) -> SourceMask:
        labels = [SourceLabel(None, "unannotated")]
        slots: dict[int, int] = {}
        index = np.zeros((height, width), np.int32)
        for annotation in annotations:
            number, category = annotation.get("id", "?"), annotation.get("category_id")
            if isinstance(category, bool) or not isinstance(category, int) or category not in categories:
                raise SampleProblem("unknown_label", where, f"annotation {number} has category_id {category!r}, "
                                    f"which 'categories' does not list")
            segmentation = annotation.get("segmentation")
            try:
                if isinstance(segmentation, dict):
                    size = segmentation.get("size")
                    if size != [height, width]:
                        raise SampleProblem("size_mismatch", where, f"the RLE of annotation {number} is "
                                            f"{_wxh(size)}, the image is {width}x{height}")
                    bits = rle_bits(rle_counts(segmentation.get("counts")), height, width, "F")
                elif isinstance(segmentation, list) and segmentation:
                    bits = polygon_bits(segmentation, height, width)
                else:
                    raise ValueError("no polygon and no RLE")
            except ValueError as exc:
                raise SampleProblem("unreadable", where, f"annotation {number}: {exc}") from None
            slot = slots.setdefault(category, len(labels))
            if slot == len(labels):
                labels.append(SourceLabel(category, categories[category]))
            index[bits] = slot
        return SourceMask(labels, index)

    return Sample(name, (path,), read_labels, where, _declared(entry))


def _wxh(size) -> str:
    return f"{size[1]}x{size[0]}" if isinstance(size, list) and len(size) == 2 else repr(size)


# ----------------------------------------------------------------------------- CVAT


#: CVAT shapes that are not areas; an image holding one is reported, not silently half-read
CVAT_OTHER_SHAPES = ("box", "polyline", "points", "ellipse", "cuboid", "skeleton")


def read_cvat(src: Path, images_dir: Path | None = None) -> Found:
    """A "CVAT for images 1.1" XML (preferred where both are there) or a "Segmentation mask 1.1" folder."""
    src = Path(src)
    if src.is_file() or list(src.glob("*.xml")):
        return _read_cvat_xml(src, images_dir)
    if (src / "labelmap.txt").is_file() and (src / "SegmentationClass").is_dir():
        return _read_cvat_masks(src, images_dir)
    raise BadInput(f"{src} is not a CVAT export: it needs annotations.xml (CVAT for images 1.1) or "
                   f"labelmap.txt and SegmentationClass/ (Segmentation mask 1.1)")


def _read_cvat_xml(src: Path, images_dir: Path | None) -> Found:
    xml_file = _one_file(src, ("*.xml",), "CVAT XML file")
    root = src if src.is_dir() else src.parent
    shown_xml = shown(xml_file, root)
    try:
        tree = ET.parse(xml_file)
    except OSError as exc:
        raise BadInput(f"cannot read the CVAT file {xml_file}: {exc.strerror or exc}") from None
    except ET.ParseError as exc:
        raise BadInput(f"the CVAT file {xml_file} is not XML: {exc}") from None
    if tree.getroot().tag != "annotations":
        raise BadInput(f"{xml_file} is not a 'CVAT for images 1.1' export (its root is <{tree.getroot().tag}>, "
                       f"not <annotations>)")
    folders = [Path(images_dir)] if images_dir else [xml_file.parent / "images", xml_file.parent, root / "images"]
    found = Found(root=root)
    images = tree.getroot().findall("image")
    names = defaultdict(list)
    ids = defaultdict(list)
    for image in images:
        names[image.get("name")].append(image)
        ids[image.get("id")].append(image.get("name"))
    for name, group in sorted(names.items(), key=lambda item: str(item[0])):
        if not name:
            found.problems.append(SampleProblem("unreadable", shown_xml, "an <image> has no name"))
            continue
        image = group[0]
        if len(group) > 1 or len(ids[image.get("id")]) > 1:
            detail = (f"{len(group)} <image> elements have this name" if len(group) > 1 else
                      f"image id {image.get('id')!r} is given to {', '.join(ids[image.get('id')])}")
            found.problems.append(SampleProblem("duplicate_id", name, f"{detail} in {shown_xml}; keep one"))
            continue
        path = _image_file(name, folders)
        shapes = [child for child in image if child.tag in ("polygon", "mask", *CVAT_OTHER_SHAPES)]
        if path is None:
            found.problems.append(SampleProblem("missing_image", name, f"listed in {shown_xml}, no such file in "
                                                f"{', '.join(shown(f, root) or '.' for f in folders)}"))
        elif not shapes:
            found.problems.append(SampleProblem("missing_mask", shown(path, root), f"no polygon or mask in {shown_xml}"))
        else:
            declared = _int(image.get("height")), _int(image.get("width"))
            found.samples.append(_cvat_sample(name, path, shapes, f"{shown_xml}: {name}",
                                              declared if None not in declared else None))
    return found


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _cvat_sample(name: str, path: Path, shapes: list[ET.Element], where: str,
                 declared: tuple[int, int] | None) -> Sample:
    def read_labels(height: int, width: int) -> SourceMask:
        labels = [SourceLabel(None, "unannotated")]
        slots: dict[str, int] = {}
        index = np.zeros((height, width), np.int32)
        ordered = sorted(shapes, key=lambda s: _int(s.get("z_order")) or 0)  # CVAT draws higher z on top
        for shape in ordered:
            label = shape.get("label") or ""
            if shape.tag in CVAT_OTHER_SHAPES:
                raise SampleProblem("unsupported_shape", where, f"a <{shape.tag}> of {label!r} is not an area; "
                                    f"draw it as a polygon or a mask, or delete it")
            try:
                bits = _cvat_polygon(shape, height, width) if shape.tag == "polygon" else _cvat_mask(shape, height, width)
            except ValueError as exc:
                raise SampleProblem("unreadable", where, f"<{shape.tag} label={label!r}>: {exc}") from None
            slot = slots.setdefault(label, len(labels))
            if slot == len(labels):
                labels.append(SourceLabel(None, label))
            index[bits] = slot
        return SourceMask(labels, index)

    return Sample(name, (path,), read_labels, where, declared)


def _cvat_polygon(shape: ET.Element, height: int, width: int) -> np.ndarray:
    try:
        points = [float(v) for pair in (shape.get("points") or "").split(";") for v in pair.split(",")]
    except ValueError:
        raise ValueError(f"points {shape.get('points')!r} are not x,y;x,y;...") from None
    return polygon_bits([points], height, width)


def _cvat_mask(shape: ET.Element, height: int, width: int) -> np.ndarray:
    """CVAT's brush mask: `rle` runs (0 first, row by row) over the box left, top, width, height."""
    left, top, box_w, box_h = (_int(shape.get(k)) for k in ("left", "top", "width", "height"))
    if None in (left, top, box_w, box_h):
        raise ValueError("a mask needs integer left, top, width and height")
    try:
        counts = [int(v) for v in (shape.get("rle") or "").split(",")]
    except ValueError:
        raise ValueError("its rle is not a list of run lengths") from None
    if any(c < 0 for c in counts):
        raise ValueError("a run length is negative")
    box = rle_bits(counts, box_h, box_w, "C")
    if left < 0 or top < 0 or left + box_w > width or top + box_h > height:
        raise ValueError(f"its box {box_w}x{box_h} at ({left}, {top}) leaves the {width}x{height} image")
    bits = np.zeros((height, width), bool)
    bits[top:top + box_h, left:left + box_w] = box
    return bits


def _read_labelmap(path: Path) -> dict[tuple[int, int, int], str]:
    """labelmap.txt ('# label:color_rgb:parts:actions', then 'burn:255,0,0::') -> colour -> name."""
    colours: dict[tuple[int, int, int], str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        try:
            rgb = tuple(int(v) for v in rest.split(":")[0].split(","))
        except ValueError:
            rgb = ()
        if len(rgb) != 3:
            raise BadInput(f"{path}, line {number}: {line!r} is not 'name:r,g,b::'")
        colours[rgb] = name  # type: ignore[index]
    return colours


def _read_cvat_masks(src: Path, images_dir: Path | None) -> Found:
    colours = _read_labelmap(src / "labelmap.txt")
    image_root = Path(images_dir) if images_dir else src / "JPEGImages"
    if not image_root.is_dir():
        raise BadInput(f"{src} has no JPEGImages/ folder: export the task with its images, or give them with --images")
    found = Found(root=src)

    def make(key: str, image: Path, mask: Path) -> Sample:
        mask_shown = shown(mask, src)

        def read_labels(height: int, width: int) -> SourceMask:
            pixels = read_mask_pixels(mask, mask_shown)
            if pixels.ndim == 2:  # grey: every channel alike
                pixels = np.repeat(pixels[..., None].astype(np.uint8), 3, axis=2)
            codes = (pixels[..., 0].astype(np.uint32) << 16) | (pixels[..., 1].astype(np.uint32) << 8) | pixels[..., 2]
            present, inverse = np.unique(codes, return_inverse=True)
            labels = []
            for code in present.tolist():
                rgb = (code >> 16, (code >> 8) & 255, code & 255)
                labels.append(SourceLabel(None, colours.get(rgb, "#%02x%02x%02x" % rgb)))
            return SourceMask(labels, inverse.reshape(codes.shape).astype(np.int32))

        return Sample(image.relative_to(image_root).as_posix(), (image,), read_labels, mask_shown)

    _pair(found, _by_key(image_root, IMAGE_SUFFIXES), _by_key(src / "SegmentationClass", MASK_SUFFIXES), make,
          lambda key: f"SegmentationClass/{key}.png")
    return found


READERS: dict[str, Callable[[Path, Path | None], Found]] = {
    "folder": read_folder,
    "coco": read_coco,
    "nnunet": read_nnunet,
    "cvat": read_cvat,
}
