"""Burn-severity overlay: tint each burn depth with its colour, draw the legend and the numbers.

`tint` works on NumPy and CuPy arrays alike; `annotate` draws text with OpenCV on the CPU (on the
GPU path Holoviz draws the legend and numbers itself).
"""
from __future__ import annotations

import cv2
import numpy as np

from holoburn.clinical.depth import BURN_CLASSES, CLASS_COLOURS_RGB, CLASS_NAMES, LABELS, TINTED
from holoburn.clinical.assessability import REASONS, UNCERTAIN


def _xp(x):
    if type(x).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


#: colour and tint of every mask value (0..255): the classes, and UNCERTAIN (burn the model is not
#: sure of) grey, without a depth colour; the GPU lanes' tint kernel uses the same tables
COLOUR_TABLE = np.zeros((256, 3), np.uint8)
COLOUR_TABLE[: len(CLASS_COLOURS_RGB)] = CLASS_COLOURS_RGB
COLOUR_TABLE[UNCERTAIN] = (150, 150, 150)
TINT_TABLE = np.zeros(256, np.uint8)
TINT_TABLE[: len(TINTED)] = TINTED
TINT_TABLE[UNCERTAIN] = 1
_COLOUR_LUT = COLOUR_TABLE[None]  # cv2.LUT's (1, 256, 3) shape


def tint(frame_rgb, mask, alpha: float = 0.45, out=None):
    """Blend class colours into the frame where the mask shows burn.

    frame_rgb: (H, W, 3) uint8; mask: (H, W) uint8 class indices. Returns (H, W, 3) uint8.
    """
    xp = _xp(frame_rgb)
    if xp is np:  # OpenCV table look-ups and uint8 blend: several times faster than NumPy indexing
        colours = cv2.LUT(cv2.merge([mask, mask, mask]), _COLOUR_LUT)
        blended = cv2.addWeighted(frame_rgb, 1.0 - alpha, colours, alpha, 0.0)
        if out is None:
            out = frame_rgb.copy()
        else:
            out[...] = frame_rgb
        cv2.copyTo(blended, cv2.LUT(mask, TINT_TABLE), out)
        return out
    colours = xp.asarray(COLOUR_TABLE, dtype=xp.float32)
    weight = xp.asarray(TINT_TABLE, dtype=xp.float32)[mask] * alpha  # (H, W)
    blended = frame_rgb * (1.0 - weight[..., None]) + colours[mask] * weight[..., None]
    if out is None:
        out = xp.empty_like(frame_rgb)
    out[...] = xp.clip(blended + 0.5, 0, 255).astype(xp.uint8)
    return out


def _outline(mask) -> np.ndarray:
    """(H, W) uint8, 1 on the edge of a burn region of any depth (burn classes are 2..5)."""
    burn = ((mask >= min(BURN_CLASSES)) & (mask <= max(BURN_CLASSES))).view(np.uint8)
    return cv2.morphologyEx(burn, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))


DEMONSTRATION = "demonstration model trained on synthetic scenes, not for clinical use"


def summary_lines(result: dict) -> list[str]:
    """Short text lines for the overlay from one frame's findings and triage."""
    if result.get("assessable") is False:
        return [f"NOT ASSESSABLE: {REASONS.get(result.get('not_assessable_reason'), 'unknown reason')}",
                "no burn figures and no triage for this frame"]
    share = result.get("burn_share_of_skin")
    lines = [f"burn: {share * 100:.1f}% of visible skin" if share is not None else "no skin in view"]
    if result.get("tbsa_pct") is not None:
        lines.append(f"est. TBSA (partial+full): {result['tbsa_pct']:.1f}%")
    triage = result.get("triage") or {}
    if triage:
        flags = ", ".join(f.replace("_", " ") for f in triage.get("flags", ()))
        lines.append(f"triage: {triage.get('level', '?').upper()}" + (f" ({flags})" if flags else ""))
        lines.append(triage.get("note", ""))
    return lines


def annotate(image_rgb: np.ndarray, mask: np.ndarray | None, lines: list[str], lane: str = "") -> np.ndarray:
    """Draw burn outlines (none without a mask), the colour legend and the text lines onto a
    CPU frame (in place)."""
    if mask is not None:
        cv2.bitwise_or(image_rgb, (255, 255, 255, 0), dst=image_rgb, mask=_outline(mask))
    height, width = image_rgb.shape[:2]
    scale = max(0.35, min(1.0, width / 1400))
    step = int(22 * scale / 0.6)
    y = step
    texts = []
    legend = [(CLASS_COLOURS_RGB[cls], LABELS[CLASS_NAMES[cls]]) for cls in BURN_CLASSES]
    for colour, label in legend + [(_COLOUR_LUT[0, UNCERTAIN], "uncertain")]:
        colour = tuple(int(c) for c in colour)
        cv2.rectangle(image_rgb, (8, y - int(step * 0.7)), (8 + int(step * 0.7), y), colour, -1)
        texts.append((label, (14 + int(step * 0.7), y)))
        y += step
    y = height - 8 - step * (len(lines) - 1)
    for line in lines:
        texts.append((line, (8, y)))
        y += step
    if lane:  # right-aligned: the lane and, when escalated, why
        text_width = cv2.getTextSize(lane, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
        texts.append((lane, (max(8, width - text_width - 8), step)))
    _texts(image_rgb, texts, scale)
    return image_rgb


def _texts(image, texts, scale):
    """White text on dark backing panels: legible on any picture, and the same on OpenCV 4 and 5
    (an outline drawn as a thicker black copy of the text smears glyphs together on OpenCV 5).
    Every panel first, then every text: a panel never covers the descenders of the line above."""
    for text, (x, y) in texts:
        (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(image, (x - 3, y - height - 3), (x + width + 3, y + baseline + 1), (24, 24, 24), -1)
    for text, origin in texts:
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def no_signal(height: int, width: int, message: str = "NO SIGNAL") -> np.ndarray:
    """A grey frame saying the source has no picture (e.g. a camera was unplugged)."""
    image = np.full((height, width, 3), 40, np.uint8)
    scale = max(0.6, width / 640)
    size = cv2.getTextSize(message, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)[0]
    _texts(image, [(message, ((width - size[0]) // 2, (height + size[1]) // 2))], scale)
    return image
