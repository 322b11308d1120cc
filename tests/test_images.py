"""Still pictures as a source (`image:PATH`): real JPEG, PNG, TIFF and WebP files written by Pillow
and OpenCV, one of them turned by EXIF and carrying GPS tags under a patient-like name, a damaged
one, one of another size, through the real command line; nothing of a file's name or EXIF in
any output or on the console."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from PIL.ExifTags import IFD

from test_pipeline import holoburn

PATIENT = "Doe_Jane_1970-01-01_MRN4711"
#: what the pictures' file names and EXIF hold; none of it may reach an output or the console
SECRETS = (PATIENT, "Doe_Jane", "Doe^Jane", "MRN4711", "Dr Quincy", "PhotoCam", "2024:05:06", "b_wide_ward3",
           "c_damaged", "d_small", "e_scan", "f_phone", "GPS", "Exif")


def red_green(height: int, width: int) -> np.ndarray:
    """Left half red (the tiny model: full thickness), right half green (healthy skin)."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:, : width // 2] = (230, 20, 20)
    frame[:, width // 2 :] = (20, 230, 20)
    return frame


def turned_photo_with_gps(path: Path) -> Path:
    """A 160 x 120 JPEG stored on its side, EXIF Orientation 6 (shown turned a quarter clockwise,
    so its red left half is on top), with GPS position, camera, owner and date tags."""
    picture = Image.fromarray(red_green(120, 160))
    exif = picture.getexif()
    exif[0x0112] = 6  # Orientation
    exif[0x010E] = "Doe^Jane left forearm"  # ImageDescription
    exif[0x013B] = "Dr Quincy"  # Artist
    exif[0x0110] = "PhotoCam 3000"  # Model
    exif[0x0132] = "2024:05:06 07:08:09"  # DateTime
    gps = exif.get_ifd(IFD.GPSInfo)
    gps.update({1: "N", 2: (52.0, 31.0, 12.5), 3: "E", 4: (13.0, 24.0, 1.5)})
    picture.save(path, exif=exif, quality=95)
    return path


@pytest.fixture
def photos(tmp_path) -> Path:
    """Six pictures as a camera and a ward would leave them, and two files that are no pictures."""
    folder = tmp_path / "ward3" / PATIENT
    folder.mkdir(parents=True)
    turned_photo_with_gps(folder / f"a_{PATIENT}.jpg")
    assert cv2.imwrite(str(folder / "b_wide_ward3.png"), cv2.cvtColor(red_green(240, 320), cv2.COLOR_RGB2BGR))
    whole = (folder / f"a_{PATIENT}.jpg").read_bytes()
    (folder / "c_damaged.jpg").write_bytes(whole[: len(whole) // 3])  # cut off inside its picture data
    Image.fromarray(red_green(90, 101)).save(folder / "d_small.webp", lossless=True)  # odd sides
    Image.fromarray(red_green(64, 80)).save(folder / "e_scan.tif")
    # a phone picture: HEIF (ftyp brand heic), which Pillow reads only with the pillow-heif plugin
    (folder / "f_phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    (folder / "notes.txt").write_text(f"{PATIENT}: photographed 2024-05-06\n")
    (folder / f"._a_{PATIENT}.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # a macOS companion file
    return folder


def heif_installed() -> bool:
    from holoburn.media.images import heif_plugin

    return heif_plugin()


def assert_nothing_identifying(out: Path, *texts: str, allowed=("source_map.IDENTIFIERS.json",)) -> None:
    """No secret in the run's text files (pictures embedded in report.html left out: base64 can
    spell anything), no metadata in its PNGs, none on the console."""
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name not in allowed):
        if path.suffix == ".png":
            with Image.open(path) as picture:
                assert not picture.info and not picture.getexif(), path
            continue
        if path.suffix not in (".json", ".jsonl", ".html", ".txt", ".log"):
            continue
        text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", path.read_text())
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} in {path.relative_to(out)}"
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} on the console"


def test_a_folder_of_photographs_through_the_command(tmp_path, tiny_card, photos):
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"image:{photos}", "--model", tiny_card, "--out", out,
                      "--save-masks", out / "masks", "--source-map")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert [l["frame"] for l in lines] == list(range(6))  # a..f sorted; notes.txt and ._ files passed over
    assert all(l["source"] == "image:1" for l in lines)
    heic = "image_unreadable" if heif_installed() else "image_needs_plugin"  # its HEIF box holds no picture
    assert [l["status"] for l in lines] == ["ok", "ok", "image_unreadable", "ok", "ok", heic]
    assert lines[0]["triage"]["level"] == "refer" and lines[0]["burn_share_of_skin"] == pytest.approx(0.5, abs=0.05)
    assert lines[3]["timestamp_s"] == pytest.approx(3.0)  # frame / image.fps (1.0)

    # one overlay per processed picture, named by opaque id and frame, each at its picture's size
    overlays = sorted(p.name for p in (out / "overlays").iterdir())
    assert overlays == ["image-1_000000.png", "image-1_000001.png", "image-1_000003.png", "image-1_000004.png"]
    sizes = {name: cv2.imread(str(out / "overlays" / name)).shape[:2] for name in overlays}
    assert sizes == {"image-1_000000.png": (160, 120), "image-1_000001.png": (240, 320),
                     "image-1_000003.png": (90, 101), "image-1_000004.png": (64, 80)}
    # EXIF orientation applied: the turned photograph's red (full thickness) half is on top
    mask = cv2.imread(str(out / "masks" / "000000.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (160, 120)
    assert (mask[:70] == 5).mean() > 0.95 and (mask[90:] == 1).mean() > 0.95
    overlay = Image.open(out / "overlays" / "image-1_000000.png")
    assert not overlay.getexif() and not overlay.info  # pixels only: no EXIF, no text chunks

    summary = json.loads((out / "summary.json").read_text())
    dropped = {"image_unreadable": 2} if heif_installed() else {"image_unreadable": 1, "image_needs_plugin": 1}
    assert summary["frames_in"] == 6 and summary["dropped"] == dropped
    assert summary["processed"] == summary["overlay_frames"] == 4
    per = summary["sources"]["image:1"]
    assert per["overlay"] == "overlays/image-1_*.png" and summary["write_errors"] == []
    assert any(s.startswith("image:1 frame 2:") and "truncated" in s for s in summary["sources_skipped"])
    if not heif_installed():
        assert "pip install pillow-heif" in result.stderr and "image:1 frame 5" in result.stderr

    # the identifiers map, written on request, is the one place a frame is tied to its file
    identifiers = json.loads((out / "source_map.IDENTIFIERS.json").read_text())
    assert os.stat(out / "source_map.IDENTIFIERS.json").st_mode & 0o777 == 0o600
    assert identifiers["files"]["image:1"]["000002"] == str(photos / "c_damaged.jpg")
    assert_nothing_identifying(out, result.stdout, result.stderr)


def test_pictures_beside_a_video_in_the_lanes(tmp_path, tiny_card, photos, red_green_video):
    """Several sources: pictures of different sizes share the CPU lanes' batches with a video's
    frames; each source keeps its own accounting and outputs."""
    config = tmp_path / "fast.yaml"
    config.write_text("image:\n  fps: 50.0\n")  # paced like a camera at 50 pictures a second
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"image:{photos.parent}/**@URGENT", "--source", f"video:{red_green_video}",
                      "--model", tiny_card, "--config", config, "--out", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    pictures, video = summary["sources"]["image:1"], summary["sources"]["video:2"]
    assert pictures["lane"] == "URGENT" and pictures["frames_in"] == 6 and video["frames_in"] == 12
    for per in (pictures, video):
        assert per["frames_in"] == per["processed"] + sum(per["dropped"].values())
    assert pictures["dropped"].get("image_unreadable") and pictures["overlay_frames"] == pictures["processed"]
    assert len(list((out / "overlays").glob("image-1_*.png"))) == pictures["processed"]
    assert video["overlay"] == "overlay_video_2.mp4" and video["overlay_frames"] == video["processed"]
    assert_nothing_identifying(out, result.stdout, result.stderr)


def test_the_cpu_lane_takes_pictures_of_different_sizes_in_one_batch(tiny_card, photos):
    from holoburn.app.config import load_config
    from holoburn.app.graph import build_runtimes, lane_policies
    from holoburn.clinical.triage import Lane
    from holoburn.engines.backend import open_backend
    from holoburn.engines.card import load_card
    from holoburn.media.images import ImageReader
    from holoburn.processing.frame import Frame
    from holoburn.processing.runtime import LaneBatch

    card = load_card(tiny_card)
    backend = open_backend(card, "onnxruntime", "fp32", device="cpu", threads=1)
    runtimes, _ = build_runtimes([Lane.ROUTINE], lane_policies(load_config(None)), device="cpu", card=card,
                                 open_backend_for=lambda lane: backend)
    runtime = runtimes[Lane.ROUTINE]
    reader = ImageReader(str(photos), name="image:1")
    frames = []
    while (read := reader.next_frame())[2] is not None:
        image, ts, status = read
        frames.append(Frame.of("image:1", len(frames), ts, image, status=status))
    batch = LaneBatch(Lane.ROUTINE, frames)
    runtime.run_through(batch)
    runtime.release(batch)
    done = [f for f in frames if f.ok]
    assert [f.index for f in done] == [0, 1, 3, 4]
    for frame in done:
        shape = frame.image.shape[:2]
        assert frame.mask.shape == shape and frame.overlay.shape[:2] == shape
        assert frame.findings["triage"]["level"] == "refer"  # every picture is half red
        assert frame.findings["burn_share_of_skin"] == pytest.approx(0.5, abs=0.05)


def test_which_files_a_location_takes(tmp_path):
    from holoburn.media.images import ImageError, list_pictures

    for name in ("b.jpg", "a.PNG", "sub/c.tif", "sub/deeper/d.webp", ".hidden.jpg", "notes.txt", "sub/x.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"?")
    relative = lambda found: [p.relative_to(tmp_path).as_posix() for p in found[1]]
    assert relative(list_pictures(str(tmp_path))) == ["a.PNG", "b.jpg"]  # the folder itself, sorted
    assert relative(list_pictures(f"{tmp_path}/**")) == ["a.PNG", "b.jpg", "sub/c.tif", "sub/deeper/d.webp"]
    assert relative(list_pictures(f"{tmp_path}/**/*.tif")) == ["sub/c.tif"]
    root, found = list_pictures(f"{tmp_path}/sub/**")
    assert root == tmp_path / "sub" and [p.name for p in found] == ["c.tif", "d.webp"]
    assert list_pictures(str(tmp_path / "b.jpg")) == (tmp_path, [tmp_path / "b.jpg"])

    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no pictures in the folder .*empty"):
        list_pictures(str(tmp_path / "empty"))
    (tmp_path / "by_day" / "monday").mkdir(parents=True)
    (tmp_path / "by_day" / "monday" / "e.jpg").write_bytes(b"?")
    with pytest.raises(ImageError, match=r"subfolders hold some: give image:.*by_day/\*\*"):
        list_pictures(str(tmp_path / "by_day"))
    with pytest.raises(ImageError, match="no pictures match"):
        list_pictures(f"{tmp_path}/*.heic")


def test_pictures_in_any_mode_become_rgb(tmp_path):
    from holoburn.media.images import read_picture

    colour = red_green(20, 30)
    cases = {
        "grey16.png": Image.fromarray((np.arange(600, dtype=np.uint16).reshape(20, 30) * 100)),
        "palette.png": Image.fromarray(colour).convert("P"),
        "alpha.png": Image.fromarray(colour).convert("RGBA"),
        "cmyk.jpg": Image.fromarray(colour).convert("CMYK"),
        "grey.tif": Image.fromarray(colour).convert("L"),
    }
    for name, picture in cases.items():
        picture.save(tmp_path / name)
        image = read_picture(tmp_path / name)
        assert image.shape == (20, 30, 3) and image.dtype == np.uint8 and image.flags.c_contiguous, name


def test_sources_without_a_usable_picture_fail_at_start(tmp_path, tiny_card, photos):
    cases = []
    empty = tmp_path / "empty_ward"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    cases.append((f"image:{empty}", f"no pictures in the folder {empty}"))
    cases.append((f"image:{tmp_path}/nowhere/*.jpg", "no pictures match"))
    cases.append((f"image:{photos / 'c_damaged.jpg'}", "cannot read the picture"))  # given alone: named, as typed
    for spec, message in cases:
        result = holoburn("run", "--source", spec, "--model", tiny_card, "--out", tmp_path / "o")
        assert result.returncode == 2 and message in result.stderr, (spec, result.stderr)
        assert "Traceback" not in result.stderr


def test_validate_pairs_masks_with_pictures_by_name(tmp_path, tiny_card):
    """Masks named as the pictures (below the source's root, subfolders too); a picture without
    a mask and a mask without a picture are reported by index and by number, never by name."""
    pictures, masks = tmp_path / "pictures", tmp_path / "masks"
    (pictures / "left").mkdir(parents=True)
    (masks / "left").mkdir(parents=True)
    turned_photo_with_gps(pictures / f"{PATIENT}.jpg")
    cv2.imwrite(str(pictures / "left" / "b_wide_ward3.png"), cv2.cvtColor(red_green(240, 320), cv2.COLOR_RGB2BGR))
    Image.fromarray(red_green(64, 80)).save(pictures / "e_scan.tif")  # no mask
    upright = np.ones((160, 120), np.uint8)
    upright[:80] = 5  # drawn on the picture as it is shown: red (full thickness) on top
    cv2.imwrite(str(masks / f"{PATIENT}.png"), upright)
    wide = np.ones((240, 320), np.uint8)
    wide[:, :160] = 5
    cv2.imwrite(str(masks / "left" / "b_wide_ward3.png"), wide)
    cv2.imwrite(str(masks / "f_phone.png"), wide)  # no such picture
    out = tmp_path / "val"
    result = holoburn("validate", "--source", f"image:{pictures}/**", "--masks", masks, "--model", tiny_card,
                      "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    # sorted below the root: Doe_... (0), e_scan (1), left/b_wide_ward3 (2)
    assert metrics["frames"]["evaluated"] == 2 and metrics["frames"]["missing_truth"] == [1]
    assert metrics["frames"]["masks_without_picture"] == 1 and metrics["frames"]["not_evaluated"] == {}
    assert metrics["pixel_pooled"]["any_burn"]["dice"] > 0.95
    assert metrics["run"]["source"] == "image:1" and "--source image:1" in metrics["command"]
    assert "1 ground-truth masks named as no picture" in result.stdout
    assert_nothing_identifying(out, result.stdout, result.stderr)


def test_a_heic_phone_picture_with_the_plugin(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif", reason="HEIC/HEIF needs the pillow-heif plugin (not installed)")
    from holoburn.media.images import ImageReader

    pillow_heif.register_heif_opener()
    picture = Image.fromarray(red_green(120, 160))
    exif = picture.getexif()
    exif[0x0112] = 6  # shown turned a quarter clockwise: red on top
    picture.save(tmp_path / f"{PATIENT}.heic", exif=exif.tobytes(), quality=95)
    image, _, status = ImageReader(str(tmp_path), name="image:1").next_frame()
    assert status == "ok" and image.shape == (160, 120, 3)
    assert image[:60, :, 0].mean() > 180 and image[100:, :, 1].mean() > 180


def test_validate_scores_known_pixels_of_an_imported_datasets_labels(tmp_path, tiny_card):
    """Labels of `holoburn dataset import` (6 burn of unknown depth, 255 unknown) are left out of
    the scores, counted; a label no dataset defines makes that frame unscored, named by its reason."""
    pictures, masks = tmp_path / "pictures", tmp_path / "masks"
    pictures.mkdir()
    masks.mkdir()
    for name in ("a", "b", "c"):
        cv2.imwrite(str(pictures / f"{name}.png"), cv2.cvtColor(red_green(60, 80), cv2.COLOR_RGB2BGR))
    truth = np.ones((60, 80), np.uint8)
    truth[:, :40] = 5
    partial = truth.copy()
    partial[:10, :10], partial[50:, 70:] = 255, 6
    cv2.imwrite(str(masks / "a.png"), truth)
    cv2.imwrite(str(masks / "b.png"), partial)
    strange = truth.copy()
    strange[0, 0] = 9
    cv2.imwrite(str(masks / "c.png"), strange)
    out = tmp_path / "val"
    result = holoburn("validate", "--source", f"image:{pictures}", "--masks", masks, "--model", tiny_card, "--out", out)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"]["evaluated"] == 2 and metrics["frames"]["not_evaluated"] == {"truth_unknown_label": [2]}
    assert metrics["unscored_truth_pixels"] == 100 + 100
    assert metrics["pixel_pooled"]["any_burn"]["dice"] > 0.95
