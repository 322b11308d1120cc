"""The independent (held-out) burn-scene family: determinism, shapes, labels, class mix, look."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from holoburn.app.synthesis.independent import independent_frames
from holoburn.clinical.depth import BURN_CLASSES, HEALTHY_SKIN, NUM_CLASSES, SKIN_CLASSES

SEED = 2024
N = 40


@pytest.fixture(scope="module")
def frames():
    return independent_frames(N, SEED)


def test_deterministic_for_a_seed_and_prefix_stable(frames):
    again = independent_frames(3, SEED)
    for (f1, m1), (f2, m2) in zip(frames[:3], again):
        assert np.array_equal(f1, f2)
        assert np.array_equal(m1, m2)
    other = independent_frames(3, SEED + 1)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(again, other))


def test_shapes_and_dtypes(frames):
    assert len(frames) == N
    for f, m in frames:
        assert f.shape == (480, 640, 3) and f.dtype == np.uint8
        assert m.shape == (480, 640) and m.dtype == np.uint8
    (f, m), = independent_frames(1, 5, size=(320, 200))  # size is (width, height)
    assert f.shape == (200, 320, 3) and m.shape == (200, 320)
    assert independent_frames(0, 5) == []


def test_labels_are_class_indices(frames):
    for _, m in frames:
        assert int(m.max()) < NUM_CLASSES


def test_every_class_appears(frames):
    seen = np.zeros(NUM_CLASSES, int)
    for _, m in frames:
        seen += np.bincount(m.ravel(), minlength=NUM_CLASSES) > 0
    assert (seen >= 3).all(), seen


def test_burn_and_skin_shares(frames):
    burn = np.array([np.isin(m, BURN_CLASSES).mean() for _, m in frames])
    skin = np.array([np.isin(m, SKIN_CLASSES).mean() for _, m in frames])
    # a few frames show skin and no burn, most are burned
    assert 1 <= int((burn == 0).sum()) <= N // 5
    burned = burn[burn > 0]
    assert burned.max() <= 0.4
    assert 0.03 <= float(np.median(burned)) <= 0.3
    assert float(np.mean((burned >= 0.02) & (burned <= 0.32))) >= 0.85
    assert skin.min() >= 0.1 and skin.max() <= 0.85
    assert 0.2 <= float(np.median(skin)) <= 0.7
    for _, m in frames:  # burn lies on skin: every frame has healthy skin around it
        assert (m == HEALTHY_SKIN).any()


def test_frames_look_photographic_not_flat(frames):
    for f, m in frames:
        colours = np.unique(f.reshape(-1, 3).astype(np.int64) @ np.array([65536, 256, 1]))
        assert len(colours) > 3000  # shading, texture and noise, not a few flat fills
        grey = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
        assert 10 < grey.mean() < 245
        # skin carries fine texture (pores, noise), it is not a flat fill
        assert cv2.Laplacian(grey, cv2.CV_32F)[m > 0].std() > 1.0
