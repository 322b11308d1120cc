"""Overlay text rendered with the installed OpenCV: every line's glyphs stay inside the box
cv2.getTextSize gives for it, on a backing panel, so no version widens or smears them."""
import cv2
import numpy as np
import pytest

from holoburn.clinical.overlay import _texts, annotate

LINES = [
    "burn: 2.8% of visible skin",
    "triage: REFER (full thickness present)",
    "NOT ASSESSABLE: outside what the model knows",
    "demonstration model trained on synthetic scenes, not for clinical use",
]
LANE = "EMERGENCY: full-thickness in 5 of last 5 frames"


@pytest.mark.parametrize("width,height", [(640, 480), (1920, 1080), (320, 240)])
def test_each_text_line_fits_its_measured_box_on_a_panel(width, height):
    image = annotate(np.full((height, width, 3), 128, np.uint8), None, LINES, LANE)
    white = (image > 200).all(axis=2)
    scale = max(0.35, min(1.0, width / 1400))  # annotate's own scale (clinical/overlay.py)
    step = int(22 * scale / 0.6)
    boxes = []
    y = height - 8 - step * (len(LINES) - 1)
    for line in LINES:
        boxes.append((line, 8, y))
        y += step
    (lane_width, _), _ = cv2.getTextSize(LANE, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    boxes.append((LANE, max(8, width - lane_width - 8), step))
    covered = np.zeros_like(white)
    for text, x, y in boxes:
        (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top, bottom, left, right = max(0, y - h - 3), y + baseline + 1, max(0, x - 3), x + w + 3
        alone = np.full_like(image, 128)
        _texts(alone, [(text, (x, y))], scale)
        glyphs = (alone > 200).all(axis=2)
        assert glyphs.any(), text
        # the glyphs span the measured box (not squashed) and no more (not widened, as outlined
        # text was on OpenCV 5)
        ys, xs = np.nonzero(glyphs)
        assert xs.min() >= x - 1 and xs.max() <= x + w + 1, (text, xs.min(), xs.max(), x, w)
        assert ys.min() >= y - h - 1 and ys.max() <= y + baseline + 1, text
        assert xs.max() - xs.min() >= 0.85 * w, (text, xs.max() - xs.min(), w)
        # on a dark panel: its rim is the panel colour
        panel = alone[top : bottom + 1, left : right + 1]
        assert (panel[[0, -1]] == 24).all() and (panel[:, [0, -1]] == 24).all(), text
        # in the whole overlay nothing covers any glyph of this line (no panel over a descender)
        assert (white[glyphs]).all(), text
        covered[top : bottom + 1, left : right + 1] = True
    legend_rows = slice(0, step * 6)  # the legend's labels, top left
    white[legend_rows, : width // 3] = False
    assert not (white & ~covered).any(), "white text outside every measured box"
