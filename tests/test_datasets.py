"""holoburn dataset import / split (holoburn.app.datasets): each source format, written here as
small real files (PNG images and masks, a COCO JSON with polygons and an RLE, an nnU-Net v2
folder, CVAT XML and CVAT mask exports), imports to the same layout byte for byte; every problem
is found in a file made to have it and named; splits keep cases together and follow the seed."""
from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from holoburn.app.cli import main
from holoburn.app.datasets.importer import SOURCE_MAP, case_finder, import_dataset
from holoburn.app.datasets.labels import load_label_map
from holoburn.clinical.errors import BadConfig, BadInput

W, H = 16, 12
BG, SKIN, SUP, SUP_PARTIAL, DEEP, FULL, BURN, UNKNOWN = 0, 1, 2, 3, 4, 5, 6, 255

# Source label names -> holoburn classes; the named formats use these names
LABEL_YAML = "skin: healthy_skin\nsup: superficial\ndeep: deep_partial\nfull: full_thickness\n"
NAMES = {"skin": SKIN, "sup": SUP, "deep": DEEP, "full": FULL}
NNUNET_VALUES = {"background": 0, "skin": 1, "sup": 2, "deep": 3, "full": 4}
CVAT_COLOURS = {"background": (0, 0, 0), "skin": (200, 150, 120), "sup": (255, 214, 0), "deep": (230, 20, 60),
                "full": (140, 0, 200)}


def rect(x0, y0, x1, y1):
    """A rectangle polygon covering pixels x0..x1-1, y0..y1-1 (as COCO's rasteriser fills it)."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


# Two scenes: (name, [(label name, polygon)], full-thickness box as x0, y0, x1, y1 or None)
SCENES = {
    "a": ([("skin", rect(1, 1, 15, 11)), ("sup", rect(3, 3, 7, 7))], None),
    "b": ([("skin", rect(1, 1, 15, 11)), ("deep", rect(8, 2, 13, 6))], (3, 7, 6, 10)),
}


def truth(scene: str) -> np.ndarray:
    """The holoburn classes of a scene, (H, W) uint8."""
    classes = np.zeros((H, W), np.uint8)
    polygons, full = SCENES[scene]
    for name, p in polygons:
        classes[p[1]:p[5], p[0]:p[2]] = NAMES[name]
    if full:
        classes[full[1]:full[3], full[0]:full[2]] = FULL
    return classes


def picture(seed: int, size=(W, H)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def save(pixels: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def source_values(scene: str, values: dict[int, int]) -> np.ndarray:
    """The scene's mask in a source's values (`values`: holoburn class -> source value)."""
    mask = truth(scene)
    return np.vectorize(lambda v: values[int(v)])(mask).astype(np.uint8)


# ----------------------------------------------------------------------------- sources


def write_folder(root: Path) -> Path:
    for k, scene in enumerate(SCENES):
        save(picture(k), root / "images" / f"{scene}.png")
        save(truth(scene), root / "masks" / f"{scene}.png")  # holoburn's values: the default map
    return root


def write_coco(root: Path) -> Path:
    from pycocotools import mask as coco_mask

    categories = [{"id": i, "name": n} for i, n in enumerate(NAMES, 1)]
    ids = {c["name"]: c["id"] for c in categories}
    images, annotations = [], []
    for k, (scene, (polygons, full)) in enumerate(SCENES.items(), 1):
        save(picture(k - 1), root / "images" / f"{scene}.png")
        images.append({"id": k, "file_name": f"{scene}.png", "width": W, "height": H})
        for name, polygon in polygons:
            annotations.append({"id": len(annotations) + 1, "image_id": k, "category_id": ids[name],
                                "segmentation": [polygon], "iscrowd": 0})
        if full:
            bits = np.zeros((H, W), np.uint8, order="F")
            bits[full[1]:full[3], full[0]:full[2]] = 1
            rle = coco_mask.encode(np.asfortranarray(bits))
            annotations.append({"id": len(annotations) + 1, "image_id": k, "category_id": ids["full"], "iscrowd": 1,
                                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_default.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root


def write_nnunet(root: Path, channels: int = 1) -> Path:
    labels = {v: NNUNET_VALUES[n] for n, v in [("background", BG), *NAMES.items()]}
    for k, scene in enumerate(SCENES):
        if channels == 1:
            save(picture(k), root / "imagesTr" / f"{scene}_0000.png")
        else:
            for c in range(3):
                save(picture(k)[..., c], root / "imagesTr" / f"{scene}_{c:04d}.png")
        save(source_values(scene, labels), root / "labelsTr" / f"{scene}.png")
    names = {"0": "RGB"} if channels == 1 else {"0": "R", "1": "G", "2": "B"}
    (root / "dataset.json").write_text(json.dumps({"channel_names": names, "labels": NNUNET_VALUES,
                                                   "numTraining": len(SCENES), "file_ending": ".png"}))
    return root


def write_cvat_xml(root: Path) -> Path:
    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>", "  <version>1.1</version>"]
    for k, (scene, (polygons, full)) in enumerate(SCENES.items()):
        save(picture(k), root / "images" / f"{scene}.png")
        lines.append(f'  <image id="{k}" name="{scene}.png" width="{W}" height="{H}">')
        for z, (name, p) in enumerate(polygons):
            points = ";".join(f"{p[i]:.2f},{p[i + 1]:.2f}" for i in range(0, len(p), 2))
            lines.append(f'    <polygon label="{name}" source="manual" occluded="0" points="{points}" z_order="{z}"/>')
        if full:  # a brush mask: runs of 0 and 1 row by row over a box one pixel wider on each side
            x0, y0, x1, y1 = full
            row = [1, x1 - x0, 1]
            runs = [row[0]] + [v for _ in range(y1 - y0 - 1) for v in (row[1], row[2] + row[0])] + row[1:]
            lines.append(f'    <mask label="full" source="manual" occluded="0" rle="{", ".join(map(str, runs))}" '
                         f'left="{x0 - 1}" top="{y0}" width="{x1 - x0 + 2}" height="{y1 - y0}" z_order="5"/>')
        lines.append("  </image>")
    lines.append("</annotations>")
    (root / "annotations.xml").write_text("\n".join(lines))
    return root


def write_cvat_masks(root: Path) -> Path:
    colour_of = {v: CVAT_COLOURS[n] for n, v in [("background", BG), *NAMES.items()]}
    (root / "labelmap.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n" + "".join(
        f"{n}:{r},{g},{b}::\n" for n, (r, g, b) in CVAT_COLOURS.items()))
    for k, scene in enumerate(SCENES):
        save(picture(k), root / "JPEGImages" / f"{scene}.png")
        mask = truth(scene)
        colours = np.zeros((H, W, 3), np.uint8)
        for value, rgb in colour_of.items():
            colours[mask == value] = rgb
        save(colours, root / "SegmentationClass" / f"{scene}.png")
    return root


WRITERS = {
    "folder": ("folder", write_folder),
    "coco": ("coco", write_coco),
    "nnunet": ("nnunet", write_nnunet),
    "nnunet_channels": ("nnunet", lambda root: write_nnunet(root, channels=3)),
    "cvat_xml": ("cvat", write_cvat_xml),
    "cvat_masks": ("cvat", write_cvat_masks),
}


def holoburn(capsys, *argv) -> tuple[int, str, str]:
    status = main(["dataset", *map(str, argv)])
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture
def label_yaml(tmp_path) -> Path:
    path = tmp_path / "labels.yaml"
    path.write_text(LABEL_YAML)
    return path


# ----------------------------------------------------------------------------- one layout


def test_every_format_imports_to_the_same_layout(tmp_path, label_yaml, capsys):
    fingerprints, records = {}, {}
    for variant, (fmt, write) in WRITERS.items():
        src = write(tmp_path / "src" / variant)
        dest = tmp_path / "dest" / variant
        status, out, err = holoburn(capsys, "import", "--format", fmt, src, dest, "--labels", label_yaml)
        assert status == 0, (variant, err)
        assert sorted(p.name for p in dest.iterdir()) == ["dataset.json", "images", "labels", SOURCE_MAP]
        ids = sorted(p.stem for p in (dest / "labels").iterdir())
        assert ids == ["case0001_001", "case0002_001"], variant
        for image_id, scene in zip(ids, SCENES):
            labels = np.asarray(Image.open(dest / "labels" / f"{image_id}.png"))
            assert labels.dtype == np.uint8 and labels.shape == (H, W)
            np.testing.assert_array_equal(labels, truth(scene), err_msg=f"{variant}: {scene}")
            np.testing.assert_array_equal(np.asarray(Image.open(dest / "images" / f"{image_id}.png")),
                                          picture(list(SCENES).index(scene)))
        info = json.loads((dest / "dataset.json").read_text())
        assert info["source_format"] == fmt and info["numTraining"] == 2 and info["num_cases"] == 2
        assert info["labels"]["burn_unspecified"] == BURN and info["labels"]["unknown"] == UNKNOWN
        assert info["images"]["case0002_001"]["pixels"]["full_thickness"] == 9
        fingerprints[variant] = info["fingerprint"]["sha256"]
        records[variant] = info["images"]
    assert len(set(fingerprints.values())) == 1, fingerprints  # the same files, byte for byte
    assert all(r == records["folder"] for r in records.values())


def test_names_stay_out_of_the_dataset_and_go_to_the_owner_only_source_map(tmp_path, capsys):
    src = tmp_path / "ward3"
    save(picture(0), src / "images" / "smith_john_left_arm.jpg")
    save(truth("a"), src / "masks" / "smith_john_left_arm.png")
    dest = tmp_path / "imported"
    assert holoburn(capsys, "import", "--format", "folder", src, dest)[0] == 0
    shared = [p for p in dest.rglob("*") if p.name != SOURCE_MAP]
    assert not any("smith" in p.name for p in shared)
    assert "smith" not in (dest / "dataset.json").read_text() and "ward3" not in (dest / "dataset.json").read_text()
    source_map = dest / SOURCE_MAP
    assert stat.S_IMODE(source_map.stat().st_mode) == 0o600
    assert json.loads(source_map.read_text())["images"]["case0001_001"]["name"] == "smith_john_left_arm.jpg"


def test_a_photograph_is_stored_upright_as_its_mask_was_drawn(tmp_path, capsys):
    """A phone JPEG stored sideways with EXIF orientation 6: annotators saw it upright."""
    upright = picture(4, (12, 16))  # 12 wide, 16 high as shown
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    Image.fromarray(np.rot90(upright, 1)).save(src / "images" / "phone.jpg", exif=exif, quality=100)
    save(np.ones((16, 12), np.uint8), src / "masks" / "phone.png")
    dest = tmp_path / "dest"
    assert holoburn(capsys, "import", "--format", "folder", src, dest)[0] == 0
    stored = Image.open(dest / "images" / "case0001_001.png")
    assert stored.size == (12, 16) and stored.mode == "RGB" and not stored.getexif()


def test_burn_without_depth_is_its_own_label(tmp_path, capsys):
    src = tmp_path / "burn_or_not"
    mask = np.where(truth("b") >= SUP, 255, 0).astype(np.uint8)  # a burn / no-burn dataset: 0 and 255
    save(picture(1), src / "images" / "b.png")
    save(mask, src / "masks" / "b.png")
    (tmp_path / "map.yaml").write_text("0: background\n255: burn_unspecified\n")
    dest = tmp_path / "dest"
    assert holoburn(capsys, "import", "--format", "folder", src, dest, "--labels", tmp_path / "map.yaml")[0] == 0
    labels = np.asarray(Image.open(dest / "labels" / "case0001_001.png"))
    np.testing.assert_array_equal(labels, np.where(mask == 255, BURN, BG))
    info = json.loads((dest / "dataset.json").read_text())
    assert info["labels"]["burn_unspecified"] == 6 and "no depth target" in info["meanings"]["burn_unspecified"]
    assert info["label_map"] == {"0": "background", "255": "burn_unspecified"}


def test_coco_rle_decoder_agrees_with_pycocotools():
    from pycocotools import mask as coco_mask

    from holoburn.app.datasets.sources import rle_bits, rle_counts

    bits = np.random.default_rng(3).random((37, 53)) > 0.6
    rle = coco_mask.encode(np.asfortranarray(bits.astype(np.uint8)))
    np.testing.assert_array_equal(rle_bits(rle_counts(rle["counts"].decode()), 37, 53, "F"), bits)
    with pytest.raises(ValueError, match="cover"):
        rle_bits(rle_counts("0" + rle["counts"].decode()), 37, 53, "F")


# ----------------------------------------------------------------------------- problems, each named


def good_pair(src: Path, name: str, seed: int = 0) -> None:
    save(picture(seed), src / "images" / f"{name}.png")
    save(truth("a"), src / "masks" / f"{name}.png")


def _size(src):
    save(picture(1), src / "images" / "small.png")
    save(np.zeros((10, 10), np.uint8), src / "masks" / "small.png")
    return ["masks/small.png"]


def _label(src):
    save(picture(1), src / "images" / "seven.png")
    save(np.full((H, W), 7, np.uint8), src / "masks" / "seven.png")
    return ["masks/seven.png", "7"]


def _no_mask(src):
    save(picture(1), src / "images" / "alone.png")
    return ["images/alone.png"]


def _no_image(src):
    save(truth("a"), src / "masks" / "orphan.png")
    return ["masks/orphan.png"]


def _duplicate(src):
    save(picture(1), src / "images" / "twice.png")
    Image.fromarray(picture(1)).save(src / "images" / "twice.jpg")
    save(truth("a"), src / "masks" / "twice.png")
    return ["images/twice.png", "images/twice.jpg"]


def _unreadable_image(src):
    (src / "images" / "broken.png").write_bytes(b"this is not a picture")
    save(truth("a"), src / "masks" / "broken.png")
    return ["images/broken.png"]


def _truncated_mask(src):
    save(picture(1), src / "images" / "cut.png")
    save(truth("a"), src / "masks" / "cut.png")
    data = (src / "masks" / "cut.png").read_bytes()
    (src / "masks" / "cut.png").write_bytes(data[: len(data) // 2])
    return ["masks/cut.png"]


PROBLEMS = {"size_mismatch": _size, "unknown_label": _label, "missing_mask": _no_mask, "missing_image": _no_image,
            "duplicate_id": _duplicate, "unreadable": _unreadable_image, "unreadable_mask": _truncated_mask}


@pytest.mark.parametrize("kind", PROBLEMS)
def test_each_problem_names_its_file_and_stops_the_import(tmp_path, kind, capsys):
    src = tmp_path / "src"
    good_pair(src, "good")
    names = PROBLEMS[kind](src)
    dest = tmp_path / "dest"
    status, out, err = holoburn(capsys, "import", "--format", "folder", src, dest)
    assert status == 2 and "Traceback" not in err
    assert kind.replace("_mask", "") in err and "--skip-bad" in err
    for name in names:
        assert name in err, (name, err)
    assert not dest.exists() and not list(tmp_path.glob(".dest.*"))  # nothing written, no leftovers


def test_all_problems_in_one_table_then_skip_bad_imports_the_rest(tmp_path, capsys):
    src = tmp_path / "src"
    good_pair(src, "good")
    expected = [name for make in PROBLEMS.values() for name in make(src)]
    dest = tmp_path / "dest"
    status, _, err = holoburn(capsys, "import", "--format", "folder", src, dest)
    assert status == 2 and "8 problems" in err
    table = err[err.index("problem "):]
    assert all(name in table for name in expected)
    assert not dest.exists()

    status, out, err = holoburn(capsys, "import", "--format", "folder", src, dest, "--skip-bad")
    assert status == 0, err
    assert "1 image of 1 case" in out and "skipped 8" in out
    assert all(name in out for name in expected)
    assert [p.name for p in (dest / "images").iterdir()] == ["case0001_001.png"]
    info = json.loads((dest / "dataset.json").read_text())
    assert info["skipped"] == 8
    skipped = json.loads((dest / SOURCE_MAP).read_text())["skipped"]
    assert {row["file"] for row in skipped} >= {"masks/small.png", "images/alone.png", "images/twice.jpg"}


def _coco_problem(root: Path, change) -> Path:
    write_coco(root)
    path = root / "annotations" / "instances_default.json"
    coco = json.loads(path.read_text())
    change(coco)
    path.write_text(json.dumps(coco))
    return root


def test_coco_problems_name_the_image(tmp_path, capsys):
    def duplicate(coco):
        coco["images"].append({**coco["images"][0], "id": 99})

    def unlisted(coco):
        coco["annotations"].append({**coco["annotations"][0], "id": 77, "image_id": 42})

    def wrong_size(coco):
        coco["images"][1]["width"] = 20

    def missing_file(coco):
        coco["images"].append({"id": 5, "file_name": "gone.png", "width": W, "height": H})

    def unknown_category(coco):
        coco["annotations"][0]["category_id"] = 9

    cases = [(duplicate, "duplicate_id", "a.png"), (unlisted, "missing_image", "image id 42"),
             (wrong_size, "size_mismatch", "images/b.png"), (missing_file, "missing_image", "gone.png"),
             (unknown_category, "unknown_label", "instances_default.json: a.png")]
    for number, (change, kind, name) in enumerate(cases):
        src = _coco_problem(tmp_path / f"coco{number}", change)
        status, _, err = holoburn(capsys, "import", "--format", "coco", src, tmp_path / f"dest{number}")
        assert status == 2 and kind in err and name in err, (kind, err)


def test_cvat_and_nnunet_problems_name_the_file(tmp_path, label_yaml, capsys):
    src = write_cvat_xml(tmp_path / "cvat")
    (src / "images" / "b.png").unlink()
    text = (src / "annotations.xml").read_text()
    (src / "annotations.xml").write_text(text.replace("</image>", '<box label="skin" xtl="1" ytl="1" xbr="3" ybr="3"/>'
                                                                  "</image>", 1))
    status, _, err = holoburn(capsys, "import", "--format", "cvat", src, tmp_path / "d1", "--labels", label_yaml)
    assert status == 2 and "missing_image" in err and "b.png" in err
    assert "unsupported_shape" in err and "annotations.xml: a.png" in err and "<box>" in err

    src = write_nnunet(tmp_path / "nnunet")
    (src / "imagesTr" / "b_0000.png").unlink()
    status, _, err = holoburn(capsys, "import", "--format", "nnunet", src, tmp_path / "d2", "--labels", label_yaml)
    assert status == 2 and "missing_image" in err and "labelsTr/b.png" in err
    status, _, err = holoburn(capsys, "import", "--format", "nnunet", src, tmp_path / "d3")  # no map for 'skin'
    assert status == 2 and "unknown_label" in err and "labelsTr/a.png" in err and "'skin' (value 1," in err


def test_bad_label_map_and_case_table_are_named(tmp_path, capsys):
    (tmp_path / "map.yaml").write_text("burn: second_degree\n")
    with pytest.raises(BadConfig, match="map.yaml.*'burn'.*second_degree"):
        load_label_map(tmp_path / "map.yaml")
    (tmp_path / "cases.csv").write_text("file,patient\na.png,p1\n")
    with pytest.raises(BadConfig, match="cases.csv.*'image' and 'case'"):
        case_finder(tmp_path / "cases.csv")
    src = write_folder(tmp_path / "src")
    status, _, err = holoburn(capsys, "import", "--format", "coco", src, tmp_path / "dest")
    assert status == 2 and "exactly one COCO JSON" in err
    good_pair(tmp_path / "busy", "x")
    status, _, err = holoburn(capsys, "import", "--format", "folder", src, tmp_path / "busy")
    assert status == 2 and "not an empty folder" in err


# ----------------------------------------------------------------------------- cases and splits


def write_cohort(src: Path, patients: int = 12) -> None:
    """Patients p01.. with 1-3 images each; depth classes differ between patients."""
    depths = [SUP, SUP_PARTIAL, DEEP, FULL]
    for p in range(1, patients + 1):
        for k in range(1 + p % 3):
            mask = truth("a")
            mask[mask == SUP] = depths[p % 4] if p % 5 else SKIN  # every 5th patient has no burn
            save(picture(p * 10 + k, (8, 6)), src / "images" / f"p{p:02d}_photo{k}.png")
            save(np.ascontiguousarray(mask[::2, ::2]), src / "masks" / f"p{p:02d}_photo{k}.png")


def test_cases_from_a_pattern_or_a_table(tmp_path, capsys):
    src = tmp_path / "src"
    write_cohort(src, patients=4)
    dest = tmp_path / "by_pattern"
    assert holoburn(capsys, "import", "--format", "folder", src, dest, "--case-pattern", r"^(p\d+)_")[0] == 0
    info = json.loads((dest / "dataset.json").read_text())
    assert info["num_cases"] == 4 and sorted({e["case"] for e in info["images"].values()}) == [
        "case0001", "case0002", "case0003", "case0004"]
    assert [i for i, e in info["images"].items() if e["case"] == "case0002"] == ["case0002_001", "case0002_002",
                                                                                 "case0002_003"]
    rows = ["image,case"] + [f"{p.name},patient_{p.name[:3]}" for p in sorted((src / "images").iterdir())][:-1]
    (tmp_path / "cases.csv").write_text("\n".join(rows) + "\n")
    status, _, err = holoburn(capsys, "import", "--format", "folder", src, tmp_path / "t", "--cases", tmp_path / "cases.csv")
    assert status == 2 and "no_case" in err and "images/p04_photo1.png" in err


def test_split_keeps_cases_together_is_stratified_and_reproducible(tmp_path, capsys):
    src = tmp_path / "src"
    write_cohort(src, patients=40)
    dest = tmp_path / "dest"
    assert holoburn(capsys, "import", "--format", "folder", src, dest, "--case-pattern", r"^(p\d+)_")[0] == 0
    status, out, err = holoburn(capsys, "split", dest, "--seed", "7")
    assert status == 0, err
    first = (dest / "splits.json").read_bytes()
    splits = json.loads(first)
    info = json.loads((dest / "dataset.json").read_text())
    assert splits["dataset_fingerprint"] == info["fingerprint"]["sha256"]
    assert sorted(i for name in ("train", "validation", "test") for i in splits[name]) == sorted(info["images"])
    case_of = {i: e["case"] for i, e in info["images"].items()}
    homes = {}
    for name in ("train", "validation", "test"):
        for image_id in splits[name]:
            assert homes.setdefault(case_of[image_id], name) == name  # no case in two splits
    for name in ("validation", "test"):  # each depth class, and cases without burn, in every split
        assert set(splits["images_per_stratum"][name]) == {"superficial", "superficial_partial", "deep_partial",
                                                           "full_thickness", "no_burn"}
    cases = {name: len(splits["cases"][name]) for name in ("train", "validation", "test")}
    assert cases["train"] > cases["validation"] and cases["train"] > cases["test"] and sum(cases.values()) == 40

    assert holoburn(capsys, "split", dest, "--seed", "7")[0] == 0
    assert (dest / "splits.json").read_bytes() == first  # the same seed, the same split
    assert holoburn(capsys, "split", dest, "--seed", "8")[0] == 0
    assert json.loads((dest / "splits.json").read_text())["cases"] != splits["cases"]

    status, _, err = holoburn(capsys, "split", dest, "--seed", "1", "--fractions", "0.5,0.5,0.5")
    assert status == 2 and "add up to 1" in err
    save(np.zeros((6, 8), np.uint8), dest / "labels" / "case0001_001.png")  # edited after the import
    status, _, err = holoburn(capsys, "split", dest, "--seed", "7")
    assert status == 2 and "changed after the import" in err


def test_import_api_reports_problems_as_declared_errors(tmp_path):
    src = tmp_path / "src"
    good_pair(src, "good")
    _size(src)
    with pytest.raises(BadInput) as raised:
        import_dataset(src, tmp_path / "dest", "folder")
    assert "masks/small.png" in str(raised.value) and not isinstance(raised.value, (ValueError, OSError))
    assert [p.kind for p in raised.value.problems] == ["size_mismatch"]
