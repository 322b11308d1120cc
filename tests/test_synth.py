"""The synthetic scene generator: reproducible, aligned ground truth, every class, valid files."""
from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from holoburn.app.synthesis import synth
from holoburn.clinical.depth import BURN_CLASSES, CLASS_NAMES, HEALTHY_SKIN, NUM_CLASSES
from holoburn.media.video import VideoReader

SMALL = (160, 120)


def _digest(pairs) -> str:
    digest = hashlib.sha256()
    for frame, mask in pairs:
        digest.update(frame.tobytes())
        digest.update(mask.tobytes())
    return digest.hexdigest()


def test_same_seed_same_arrays_and_shapes():
    first = list(synth.iter_frames(12, seed=3, size=SMALL, frames_per_scene=4))
    again = list(synth.iter_frames(12, seed=3, size=SMALL, frames_per_scene=4))
    assert len(first) == 12
    for (frame, mask), (frame2, mask2) in zip(first, again):
        assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8
        assert mask.shape == (120, 160) and mask.dtype == np.uint8
        assert mask.max() < NUM_CLASSES
        assert np.array_equal(frame, frame2) and np.array_equal(mask, mask2)


def test_different_seed_differs_and_shorter_run_is_a_prefix():
    a = list(synth.iter_frames(6, seed=3, size=SMALL, frames_per_scene=3))
    b = list(synth.iter_frames(6, seed=4, size=SMALL, frames_per_scene=3))
    assert _digest(a) != _digest(b)
    prefix = list(synth.iter_frames(4, seed=3, size=SMALL, frames_per_scene=3))
    assert _digest(prefix) == _digest(a[:4])
    # scenes are independent: drawing one alone gives the frames iter_frames gives
    assert _digest(synth.scene_frames(3, 1, 3, SMALL)) == _digest(a[3:6])


def test_output_does_not_depend_on_opencv_threads():
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(1)
        one = _digest(synth.iter_frames(3, seed=5, frames_per_scene=3))
        cv2.setNumThreads(max(2, threads))
        many = _digest(synth.iter_frames(3, seed=5, frames_per_scene=3))
    finally:
        cv2.setNumThreads(threads)
    assert one == many


def test_camera_moves_within_a_scene_and_scenes_change():
    pairs = list(synth.iter_frames(6, seed=8, size=SMALL, frames_per_scene=3))
    (f0, m0), (f1, m1), (f3, _) = pairs[0], pairs[1], pairs[3]
    assert not np.array_equal(f0, f1)
    # consecutive frames of a scene show the same scene, shifted a little
    assert (m0 == m1).mean() > 0.8
    assert np.abs(f0.astype(int) - f1.astype(int)).mean() < np.abs(f0.astype(int) - f3.astype(int)).mean()


def test_every_class_appears_in_sixty_frames():
    totals = np.zeros(NUM_CLASSES, np.int64)
    for _, mask in synth.iter_frames(60, seed=0, size=(320, 240), frames_per_scene=5):
        totals += np.bincount(mask.ravel(), minlength=NUM_CLASSES)
    missing = [name for name, n in zip(CLASS_NAMES, totals) if n == 0]
    assert not missing, f"classes never drawn: {missing}"
    # each burn depth is more than a sliver of the data
    share = totals / totals.sum()
    assert all(share[c] > 0.005 for c in BURN_CLASSES), share


def _class_separation(frame, mask):
    """Between-class over total variance of the frame's colour, grouped by the mask."""
    pixels = frame.reshape(-1, 3).astype(np.float64)
    labels = mask.ravel()
    total = pixels.var(0).sum()
    between = 0.0
    for c in np.unique(labels):
        sel = labels == c
        between += sel.mean() * ((pixels[sel].mean(0) - pixels.mean(0)) ** 2).sum()
    return between / total


def test_masks_align_with_frames():
    checked = 0
    for frame, mask in synth.iter_frames(6, seed=11, size=(320, 240), frames_per_scene=2):
        if len(np.unique(mask)) < 3:
            continue
        checked += 1
        aligned = _class_separation(frame, mask)
        for dy, dx in ((0, 8), (8, 0), (0, -8), (-8, 0)):
            shifted = np.roll(mask, (dy, dx), axis=(0, 1))
            assert _class_separation(frame, shifted) < aligned
    assert checked >= 2


def test_burns_lie_on_skin(monkeypatch):
    """Every wound is clipped to the skin drawn before it, and the scene keeps healthy skin around it."""
    drawn = []
    original = synth._wound_zones

    def recording(rng, skin, *args):
        wound = original(rng, skin, *args)
        if wound is not None:
            drawn.append((skin.copy(), wound))
        return wound

    monkeypatch.setattr(synth, "_wound_zones", recording)
    for scene in range(12):
        synth.scene_frames(2, scene, 1, (320, 240))
    assert drawn
    for skin, (y0, x0, zones) in drawn:
        under = skin[y0 : y0 + zones.shape[0], x0 : x0 + zones.shape[1]]
        assert not (zones[under == 0] > 0).any(), "a burn was drawn off the skin"
    for _, mask in synth.iter_frames(12, seed=2, size=(320, 240), frames_per_scene=1):
        if np.isin(mask, BURN_CLASSES).any():
            assert (mask == HEALTHY_SKIN).any()


def test_generate_writes_reproducible_files(tmp_path):
    a = synth.generate(tmp_path / "a", 10, seed=4, size=SMALL, frames_per_scene=5, png=True)
    b = synth.generate(tmp_path / "b", 10, seed=4, size=SMALL, frames_per_scene=5, png=True)
    c = synth.generate(tmp_path / "c", 10, seed=5, size=SMALL, frames_per_scene=5)
    assert a == b
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    assert a["masks"]["sha256"] != c["masks"]["sha256"]
    assert a["classes"] == list(CLASS_NAMES) and a["generator_version"] == synth.GENERATOR_VERSION
    assert "synthetic" in a["note"]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["frames"] == 10 and manifest["size"] == [160, 120]
    assert sum(manifest["pixels_per_class"].values()) == 10 * 160 * 120

    expected = list(synth.iter_frames(10, seed=4, size=SMALL, frames_per_scene=5))
    for i, (frame, mask) in enumerate(expected):
        name = f"{i:06d}.png"
        on_disk = cv2.imread(str(tmp_path / "a" / "masks" / name), cv2.IMREAD_UNCHANGED)
        assert on_disk.dtype == np.uint8 and np.array_equal(on_disk, mask)
        png = cv2.cvtColor(cv2.imread(str(tmp_path / "a" / "frames" / name)), cv2.COLOR_BGR2RGB)
        assert np.array_equal(png, frame)
        assert manifest["masks"]["sha256"][name] == hashlib.sha256((tmp_path / "a" / "masks" / name).read_bytes()).hexdigest()

    decoded = []
    for run in ("a", "b"):
        with VideoReader(tmp_path / run / "frames.mp4") as reader:
            decoded.append([frame for frame, _ in reader])
    assert len(decoded[0]) == 10, "video frame count must equal `frames`"
    assert all(np.array_equal(x, y) for x, y in zip(*decoded))
    # lossy, but the same picture: decoded frames stay close to the rendered ones
    assert np.abs(decoded[0][0].astype(int) - expected[0][0].astype(int)).mean() < 12


def test_generate_reports_progress(tmp_path):
    seen = []
    synth.generate(tmp_path, 3, seed=1, size=(64, 64), progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"frames": 0}, "frames"),
        ({"frames": 2.5}, "frames"),
        ({"seed": -1}, "seed"),
        ({"size": (32, 480)}, "at least 64x64"),
        ({"size": "640x480"}, "size"),
        ({"frames_per_scene": 0}, "frames_per_scene"),
    ],
)
def test_bad_arguments_are_refused(kwargs, words):
    args = {"frames": 2, "seed": 0, "size": (64, 64), "frames_per_scene": 2, **kwargs}
    with pytest.raises(ValueError, match=words):
        synth.iter_frames(**args)


def test_generate_refuses_odd_video_size_and_bad_fps(tmp_path):
    with pytest.raises(ValueError, match="even"):
        synth.generate(tmp_path, 2, seed=0, size=(65, 64))
    with pytest.raises(ValueError, match="fps"):
        synth.generate(tmp_path, 2, seed=0, size=(64, 64), fps=0)


def test_parse_size_and_cli_arguments(tmp_path):
    import argparse

    assert synth.parse_size("640x480") == (640, 480)
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        synth.parse_size("640")
    parser = synth.add_synth_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--out", str(tmp_path), "--frames", "2", "--seed", "7", "--size", "64x64", "--frames-per-scene", "1", "--png"])
    manifest = synth.run_synth(args)
    assert manifest["seed"] == 7 and (tmp_path / "frames" / "000001.png").is_file()
