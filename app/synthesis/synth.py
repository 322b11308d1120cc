"""Synthetic burn scenes with exact ground truth, for demos, tests and the shipped demo model.

Every frame is a photograph-like picture of skin on a clinical background with burn wounds of the
four depths of CLINICAL.md drawn on the skin, and a class mask that labels every pixel with the
classes of `holoburn.clinical.depth` (0 background, 1 healthy skin, 2..5 burn depths).

A scene (background, body parts, wounds, lighting) is drawn once on a canvas a little larger than
the frame; its frames are that canvas seen through a slowly moving camera (small shift, rotation,
zoom), then blurred and given sensor noise. After `frames_per_scene` frames a new scene starts.

Randomness: scene k of seed s draws from `numpy.random.SeedSequence(s, spawn_key=(k,))` alone, so
scenes can be drawn in any order or in parallel and a shorter run is a prefix of a longer one.

The pictures are synthetic: they teach the pipeline's shape and test its arithmetic; they are not
clinical images and a model trained on them is not fit for clinical use.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from holoburn.app.synthesis import variation
from holoburn.clinical.errors import BadInput
from holoburn.clinical.depth import (
    BACKGROUND,
    CLASS_NAMES,
    DEEP_PARTIAL,
    FULL_THICKNESS,
    HEALTHY_SKIN,
    NUM_CLASSES,
    SUPERFICIAL,
    SUPERFICIAL_PARTIAL,
)

#: bump when the pictures for a given seed change; recorded in manifests and model cards
GENERATOR_VERSION = "2.0.0"

#: scene families (see variation.py); "clinic" draws exactly what generator 1.0.0 drew
FAMILIES = ("clinic", "varied", "no_skin", "contact")

DEFAULT_SIZE = (640, 480)  # (width, height)
DEFAULT_FRAMES_PER_SCENE = 15
MIN_SIDE = 64

# Typical unexposed skin colours, Fitzpatrick types I..VI, RGB in 0..1 (before lighting).
FITZPATRICK_RGB = np.array(
    [
        (0.96, 0.83, 0.76),
        (0.91, 0.74, 0.64),
        (0.82, 0.63, 0.50),
        (0.68, 0.48, 0.34),
        (0.49, 0.33, 0.23),
        (0.31, 0.21, 0.15),
    ],
    dtype=np.float32,
)

_BACKGROUND_PALETTES = {
    # kind: list of base colours (RGB 0..1); jittered per scene
    "sheet": [(0.93, 0.93, 0.92), (0.80, 0.87, 0.93), (0.82, 0.91, 0.86), (0.86, 0.86, 0.88)],
    "drape": [(0.20, 0.42, 0.62), (0.22, 0.50, 0.42), (0.17, 0.47, 0.52), (0.32, 0.36, 0.55)],
    "floor": [(0.50, 0.50, 0.48), (0.70, 0.64, 0.55), (0.30, 0.30, 0.32), (0.55, 0.45, 0.36)],
    "wall": [(0.88, 0.85, 0.76), (0.80, 0.84, 0.76), (0.74, 0.76, 0.78), (0.90, 0.82, 0.70)],
    "blanket": [(0.62, 0.20, 0.22), (0.80, 0.55, 0.30), (0.45, 0.30, 0.50), (0.85, 0.65, 0.65)],
}


# ----------------------------------------------------------------------------- validation


def _check_args(frames: int, seed: int, size, frames_per_scene: int, even: bool = False):
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        raise ValueError(f"frames must be an integer >= 1, got {frames!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (width, height), got {size!r}") from None
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ValueError(f"size must be at least {MIN_SIDE}x{MIN_SIDE}, got {width}x{height}")
    if width > 8192 or height > 8192:
        raise ValueError(f"size must be at most 8192x8192, got {width}x{height}")
    if even and (width % 2 or height % 2):
        # the MPEG-4 encoder silently drops an odd last row/column, so frames and masks would differ
        raise ValueError(f"video size must be even in both directions, got {width}x{height}")
    if (
        isinstance(frames_per_scene, bool)
        or not isinstance(frames_per_scene, (int, np.integer))
        or frames_per_scene < 1
    ):
        raise ValueError(f"frames_per_scene must be an integer >= 1, got {frames_per_scene!r}")
    return width, height


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480)."""
    try:
        width, height = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"size must look like WIDTHxHEIGHT (e.g. 640x480), got {text!r}") from None
    return width, height


# ----------------------------------------------------------------------------- noise fields


def _smooth_noise(rng, height: int, width: int, cells: float, octaves: int = 3, gain: float = 0.5):
    """(height, width) float32 fractal noise, zero mean, unit std; `cells` = features across the long side."""
    total = np.zeros((height, width), np.float32)
    amplitude = 1.0
    long_side = max(height, width)
    for octave in range(octaves):
        n = max(2.0, cells * (2**octave))
        gh = max(2, int(math.ceil(n * height / long_side)) + 1)
        gw = max(2, int(math.ceil(n * width / long_side)) + 1)
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        total += amplitude * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        amplitude *= gain
    total -= total.mean()
    std = float(total.std())
    return total / std if std > 1e-6 else total


def _blend(base, colour, alpha):
    """base (H,W,3), colour (H,W,3) or (3,), alpha (H,W) in 0..1 -> new (H,W,3) float32."""
    colour = np.asarray(colour, np.float32)
    return base + (colour - base) * alpha[..., None]


def _blend_into(image, colour, alpha):
    """In place, only over the bounding box where alpha > 0 (full-canvas layers are mostly empty)."""
    x, y, w, h = cv2.boundingRect((alpha > 0).astype(np.uint8))
    if w == 0 or h == 0:
        return image
    box = (slice(y, y + h), slice(x, x + w))
    colour = np.asarray(colour, np.float32)
    if colour.ndim == 3:
        colour = colour[box]
    region = image[box]
    region += (colour - region) * alpha[box][..., None]
    return image


def _jitter_colour(rng, colour, amount: float):
    colour = np.asarray(colour, np.float32) * (1.0 + rng.uniform(-amount, amount))
    colour = colour + rng.uniform(-amount, amount, 3).astype(np.float32) * 0.5 * colour.mean()
    return np.clip(colour, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- background


def _draw_background(rng, height: int, width: int, family: str = "clinic"):
    draw = rng.random() if family != "clinic" else 1.0
    if draw < 0.45:
        image = variation.photo_background(rng, height, width)
    elif draw < 0.65:
        image = variation.texture_background(rng, height, width, _smooth_noise)
    else:
        image = _clinical_background(rng, height, width)
    _add_clinical_objects(rng, image)
    if family != "clinic":
        variation.add_distractors(rng, image, _smooth_noise, int(rng.integers(0, 5)))
    return image


def _clinical_background(rng, height: int, width: int):
    kind = str(rng.choice(list(_BACKGROUND_PALETTES)))
    palette = _BACKGROUND_PALETTES[kind]
    base = _jitter_colour(rng, palette[rng.integers(len(palette))], 0.12)
    image = np.empty((height, width, 3), np.float32)
    image[...] = base
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    long_side = float(max(height, width))
    shade = 1.0 + 0.06 * _smooth_noise(rng, height, width, 3)
    if kind in ("sheet", "drape", "blanket"):
        # cloth folds: a few soft ridges along a random direction, bent by low-frequency noise
        angle = rng.uniform(0, math.pi)
        along = (xx * math.cos(angle) + yy * math.sin(angle)) / long_side
        bend = 0.08 * _smooth_noise(rng, height, width, 2)
        for _ in range(rng.integers(2, 5)):
            freq = rng.uniform(1.5, 5)
            shade += rng.uniform(0.03, 0.10) * np.sin(2 * math.pi * freq * (along + bend) + rng.uniform(0, 6.3))
        weave = _smooth_noise(rng, height, width, long_side / 3, octaves=1)
        shade += rng.uniform(0.01, 0.04) * weave
    elif kind == "floor":
        tile = int(rng.uniform(0.12, 0.3) * long_side)
        offset = rng.integers(0, tile, 2)
        grout = ((xx.astype(np.int32) + offset[0]) % tile < 3) | ((yy.astype(np.int32) + offset[1]) % tile < 3)
        shade += 0.10 * _smooth_noise(rng, height, width, long_side / 6, octaves=2)
        shade = np.where(grout, shade * rng.uniform(0.55, 0.8), shade)
    else:  # wall: paint texture and a soft light fall-off
        shade += 0.025 * _smooth_noise(rng, height, width, long_side / 8, octaves=2)
    image *= shade[..., None]
    return image


def _add_clinical_objects(rng, image):
    """A few clinical objects lying on the background (gauze, gloves, tubing, towels), some reddish,
    so that "red" alone is not "burn" and "white" alone is not "full thickness"."""
    height, width = image.shape[:2]
    long_side = float(max(height, width))
    for _ in range(rng.integers(0, 4)):
        kind_obj = rng.integers(4)
        mask = np.zeros((height, width), np.uint8)
        cx, cy = int(rng.uniform(0, width)), int(rng.uniform(0, height))
        if kind_obj == 0:  # gauze pad: white rectangle with weave
            w, h = (int(rng.uniform(0.08, 0.2) * long_side) for _ in range(2))
            box = cv2.boxPoints(((cx, cy), (w, h), rng.uniform(0, 180))).astype(np.int32)
            cv2.fillConvexPoly(mask, box, 1)
            colour = _jitter_colour(rng, (0.95, 0.94, 0.92), 0.05)
        elif kind_obj == 1:  # glove: blue/purple blob
            axes = (int(rng.uniform(0.05, 0.12) * long_side), int(rng.uniform(0.03, 0.06) * long_side))
            cv2.ellipse(mask, (cx, cy), axes, rng.uniform(0, 180), 0, 360, 1, -1)
            colour = _jitter_colour(rng, [(0.35, 0.45, 0.85), (0.50, 0.40, 0.75)][rng.integers(2)], 0.1)
        elif kind_obj == 2:  # tubing: a thick curve
            pts = np.cumsum(rng.normal(0, 0.08 * long_side, (6, 2)), 0) + (cx, cy)
            cv2.polylines(mask, [pts.astype(np.int32)], False, 1, int(rng.uniform(4, 12)))
            colour = _jitter_colour(rng, [(0.85, 0.88, 0.90), (0.55, 0.70, 0.85)][rng.integers(2)], 0.1)
        else:  # towel or stained cloth, sometimes red-pink
            axes = (int(rng.uniform(0.08, 0.2) * long_side), int(rng.uniform(0.05, 0.15) * long_side))
            cv2.ellipse(mask, (cx, cy), axes, rng.uniform(0, 180), 0, 360, 1, -1)
            colour = _jitter_colour(rng, [(0.75, 0.30, 0.32), (0.90, 0.70, 0.70), (0.85, 0.80, 0.55)][rng.integers(3)], 0.1)
        texture = 1.0 + 0.05 * _smooth_noise(rng, height, width, long_side / 10, octaves=1)
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.0)
        _blend_into(image, colour[None, None, :] * texture[..., None], alpha)
    return image


# ----------------------------------------------------------------------------- body parts


def _capsule(mask, p0, p1, r0, r1):
    """Tapered capsule (limb, finger) from p0 (radius r0) to p1 (radius r1), filled with 1."""
    t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], 1)
    pts = np.concatenate([np.asarray(p0) + r0 * circle, np.asarray(p1) + r1 * circle])
    hull = cv2.convexHull(np.round(pts).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8)


def _draw_body_part(rng, kind: str, height: int, width: int):
    """(mask uint8 of the skin, hair mask uint8 or None) for one body part on the canvas."""
    mask = np.zeros((height, width), np.uint8)
    hair = None
    s = float(min(height, width))
    cx, cy = rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height
    angle = rng.uniform(0, 2 * math.pi)
    direction = np.array([math.cos(angle), math.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    centre = np.array([cx, cy])
    if kind in ("arm", "leg"):
        r = rng.uniform(0.13, 0.2) * s if kind == "arm" else rng.uniform(0.2, 0.3) * s
        length = rng.uniform(0.9, 1.6) * max(height, width)
        bend = rng.uniform(-0.35, 0.35)  # elbow or knee
        joint = centre + direction * rng.uniform(-0.15, 0.15) * length
        end_a = joint - direction * length * 0.5
        d2 = np.array([math.cos(angle + bend), math.sin(angle + bend)])
        end_b = joint + d2 * length * 0.5
        _capsule(mask, end_a, joint, r * rng.uniform(1.0, 1.2), r)
        _capsule(mask, joint, end_b, r, r * rng.uniform(0.7, 0.95))
    elif kind == "trunk":
        axes = (int(rng.uniform(0.45, 0.8) * s), int(rng.uniform(0.35, 0.6) * s))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, math.degrees(angle), 0, 360, 1, -1)
        # shoulders or hips: a wider band across one end
        if rng.random() < 0.6:
            end = centre + normal * axes[1] * 0.6
            _capsule(mask, end - direction * axes[0] * 1.1, end + direction * axes[0] * 1.1, axes[1] * 0.45, axes[1] * 0.45)
    elif kind == "hand":
        palm_r = rng.uniform(0.14, 0.22) * s
        palm = centre
        cv2.ellipse(
            mask, (int(palm[0]), int(palm[1])), (int(palm_r), int(palm_r * 0.85)), math.degrees(angle), 0, 360, 1, -1
        )
        # wrist and forearm leaving the frame behind the palm
        _capsule(mask, palm - direction * palm_r * 0.6, palm - direction * palm_r * 4.0, palm_r * 0.7, palm_r * 0.8)
        spread = rng.uniform(0.08, 0.22)
        for i, (length, radius) in enumerate([(1.5, 0.2), (1.75, 0.21), (1.65, 0.2), (1.3, 0.17)]):
            a = angle + (i - 1.5) * spread
            d = np.array([math.cos(a), math.sin(a)])
            base = palm + direction * palm_r * 0.7 + normal * (i - 1.5) * palm_r * 0.42
            curl = rng.uniform(0.6, 1.0)
            _capsule(mask, base, base + d * palm_r * length * curl, palm_r * radius, palm_r * radius * 0.85)
        thumb_dir = np.array([math.cos(angle + 1.1), math.sin(angle + 1.1)])
        side = palm + normal * palm_r * 0.8
        _capsule(mask, side, side + thumb_dir * palm_r * 1.2, palm_r * 0.24, palm_r * 0.2)
    else:  # face-ish: an oval with a neck; hair on top is not skin
        axes = (int(rng.uniform(0.22, 0.33) * s), int(rng.uniform(0.28, 0.42) * s))
        deg = math.degrees(angle) % 40 - 20  # roughly upright
        cv2.ellipse(mask, (int(cx), int(cy)), axes, deg, 0, 360, 1, -1)
        neck_dir = np.array([-math.sin(math.radians(deg)), math.cos(math.radians(deg))])
        _capsule(mask, centre, centre + neck_dir * axes[1] * 2.5, axes[0] * 0.55, axes[0] * 0.6)
        if rng.random() < 0.8:
            hair = np.zeros_like(mask)
            cv2.ellipse(
                hair,
                (int(cx - neck_dir[0] * axes[1] * 0.35), int(cy - neck_dir[1] * axes[1] * 0.35)),
                (int(axes[0] * 1.08), int(axes[1] * 0.8)),
                deg,
                180,
                360,
                1,
                -1,
            )
    return mask, hair


# ----------------------------------------------------------------------------- wounds


def _wound_zones(rng, skin, dist, height, width, scale, outline: str = "blob"):
    """One wound: (y0, x0, labels of the wound box (0 = none, else depth class)) or None.

    outline: blob (an irregular patch), streak (a scald) or contact (a sharp geometric shape).
    """
    candidates = np.flatnonzero(dist > 0.04 * scale)
    if candidates.size == 0:
        return None
    idx = candidates[rng.integers(candidates.size)]
    cy, cx = divmod(int(idx), width)
    # the deepest depth of this wound and the shallowest at its rim
    deepest = int(rng.choice([SUPERFICIAL, SUPERFICIAL_PARTIAL, DEEP_PARTIAL, FULL_THICKNESS], p=[0.16, 0.24, 0.30, 0.30]))
    shallowest = int(rng.integers(SUPERFICIAL, deepest + 1)) if rng.random() < 0.85 else deepest
    depths = list(range(deepest, shallowest - 1, -1))
    if len(depths) > 2 and rng.random() < 0.3:  # sometimes a depth is skipped
        depths.pop(int(rng.integers(1, len(depths) - 1)))
    radius = rng.uniform(0.1, 0.32) * scale * (1.25 if deepest == SUPERFICIAL else 1.0)
    aspect = rng.uniform(0.5, 1.0)
    # the distorted blob stays inside 1.8 radii (factors clipped below); streaks reach 2.1
    half = int(radius * (1.9 if outline == "blob" else 2.2)) + 4
    y0, y1 = max(0, cy - half), min(height, cy + half)
    x0, x1 = max(0, cx - half), min(width, cx + half)
    bh, bw = y1 - y0, x1 - x0
    if outline == "blob":
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        theta = rng.uniform(0, math.pi)
        u = ((xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)) / radius
        v = (-(xx - cx) * math.sin(theta) + (yy - cy) * math.cos(theta)) / (radius * aspect)
        shape = np.sqrt(u * u + v * v)
        # irregular edge: low-frequency distortion plus a ragged finer edge
        stretch = np.clip(1.0 + 0.28 * _smooth_noise(rng, bh, bw, 3, octaves=2), 0.7, 1.6)
        ragged = 0.07 * np.clip(_smooth_noise(rng, bh, bw, 10, octaves=2), -3, 3)
        shape = shape * stretch + ragged
        zone_field = shape + 0.12 * _smooth_noise(rng, bh, bw, 5, octaves=2)
    else:
        draw = variation.streak_outline if outline == "streak" else variation.contact_outline
        whole = variation.outline_field(draw(rng, 2 * half, 2 * half, radius), radius)
        shape = whole[y0 - (cy - half) : y1 - (cy - half), x0 - (cx - half) : x1 - (cx - half)]
        roughness = 0.12 if outline == "streak" else 0.04  # a contact burn keeps the object's sharp edge
        zone_field = shape + roughness * _smooth_noise(rng, bh, bw, 5, octaves=2)
    labels = np.zeros((bh, bw), np.uint8)
    inside = (shape < 1.0) & (skin[y0:y1, x0:x1] > 0)
    # deeper centre, shallower rim: split 0..1 of the zone field into bands with random widths
    # bands share the wound's area (not its radius), so the deep centre is not a speck
    widths = rng.uniform(0.6, 1.4, len(depths))
    edges = np.sqrt(np.cumsum(widths) / widths.sum())
    band = np.searchsorted(edges[:-1], np.clip(zone_field, 0, 0.999), side="right")
    labels[inside] = np.asarray(depths, np.uint8)[band[inside]]
    return y0, x0, labels


def _paint_superficial(rng, region, skin_tone, mask, light):
    """Erythema: red-pink, dry, smooth; blotchy but without texture of its own."""
    h, w = mask.shape
    red = _jitter_colour(rng, (0.86, 0.30, 0.28), 0.12) * (0.55 + 0.45 * float(skin_tone.mean()) / 0.8)
    alpha = np.clip(rng.uniform(0.45, 0.7) + 0.12 * _smooth_noise(rng, h, w, 4), 0.2, 0.9)
    return _blend(region, red, alpha)


def _paint_superficial_partial(rng, region, skin_tone, mask, light, scale):
    """Moist pink-red base with a wet sheen and blisters (pale domes with a specular highlight)."""
    h, w = mask.shape
    base = _jitter_colour(rng, (0.93, 0.42, 0.42), 0.12) * (0.75 + 0.25 * float(skin_tone.mean()) / 0.8)
    out = _blend(region, base, np.clip(0.8 + 0.08 * _smooth_noise(rng, h, w, 6), 0, 1))
    out *= (1.0 + 0.06 * _smooth_noise(rng, h, w, 12, octaves=2))[..., None]
    # wet glints: sparse small bright specks
    glint = np.clip((_smooth_noise(rng, h, w, max(8.0, w / 6), octaves=1) - 2.0) * 1.5, 0, 1)
    out = _blend(out, (1.0, 0.97, 0.95), glint * 0.8)
    # blisters
    area = float(mask.sum())
    count = int(min(40, area / (scale * scale * 0.004) + rng.integers(1, 4)))
    ys, xs = np.nonzero(mask)
    dome = np.zeros((h, w), np.float32)
    rim = np.zeros((h, w), np.float32)
    highlight = np.zeros((h, w), np.float32)
    for _ in range(count if ys.size else 0):
        i = rng.integers(ys.size)
        r = rng.uniform(0.012, 0.05) * scale
        cy, cx = int(ys[i]), int(xs[i])
        axes = (max(2, int(r)), max(2, int(r * rng.uniform(0.6, 1.0))))
        ang = rng.uniform(0, 180)
        cv2.ellipse(dome, (cx, cy), axes, ang, 0, 360, 1.0, -1)
        cv2.ellipse(rim, (cx, cy), axes, ang, 0, 360, 1.0, max(1, int(r * 0.15)))
        hx, hy = int(cx - light[0] * r * 0.4), int(cy - light[1] * r * 0.4)
        cv2.circle(highlight, (hx, hy), max(1, int(r * 0.25)), 1.0, -1)
    if count:
        dome = cv2.GaussianBlur(dome, (0, 0), 1.0) * mask
        fluid = _jitter_colour(rng, (0.95, 0.86, 0.72), 0.06)
        out = _blend(out, fluid, dome * rng.uniform(0.55, 0.8))
        out = _blend(out, base * 0.7, cv2.GaussianBlur(rim, (0, 0), 0.8) * mask * 0.5)
        out = _blend(out, (1.0, 1.0, 1.0), cv2.GaussianBlur(highlight, (0, 0), 1.2) * mask * 0.9)
    return out


def _paint_deep_partial(rng, region, skin_tone, mask, light, scale):
    """Mottled: blanched pale pink-white skin with irregular dull-red patches and specks; not moist."""
    h, w = mask.shape
    pale = _jitter_colour(rng, (0.94, 0.84, 0.80), 0.06)
    red = _jitter_colour(rng, (0.78, 0.40, 0.40), 0.12)
    cells = max(4.0, max(h, w) / (scale * rng.uniform(0.025, 0.05)))
    # ridged noise gives veiny, net-like mottling rather than round blobs (which would read as blisters)
    mottle = np.abs(_smooth_noise(rng, h, w, cells, octaves=2))
    t = np.clip((mottle - rng.uniform(0.3, 0.7)) * 2.0, 0, 1)  # 1 = pale
    colour = pale[None, None, :] * t[..., None] + red[None, None, :] * (1 - t[..., None])
    colour *= (1.0 + 0.04 * _smooth_noise(rng, h, w, max(8.0, max(h, w) / 4), octaves=1))[..., None]
    out = _blend(region, colour, np.full((h, w), rng.uniform(0.85, 0.95), np.float32))
    specks = np.clip((_smooth_noise(rng, h, w, max(8.0, w / 4), octaves=1) - 2.0) * 2.0, 0, 1)
    out = _blend(out, (0.55, 0.12, 0.15), specks * 0.8)
    return out


def _paint_full_thickness(rng, region, skin_tone, mask, light, scale):
    """Dry eschar: white-waxy, tan-leathery, brown or charred, with grain and cracks."""
    h, w = mask.shape
    variants = [(0.90, 0.87, 0.80), (0.70, 0.55, 0.40), (0.42, 0.28, 0.18), (0.13, 0.11, 0.10)]
    first = int(rng.integers(len(variants)))
    second = int(np.clip(first + rng.choice([-1, 1]), 0, len(variants) - 1))
    a, b = _jitter_colour(rng, variants[first], 0.1), _jitter_colour(rng, variants[second], 0.1)
    mix = np.clip(0.5 + 0.5 * _smooth_noise(rng, h, w, 4) - rng.uniform(0.2, 0.6), 0, 1)
    colour = a[None, None, :] * (1 - mix[..., None]) + b[None, None, :] * mix[..., None]
    grain = _smooth_noise(rng, h, w, max(8.0, max(h, w) / 3), octaves=1)
    colour *= (1.0 + 0.10 * grain + 0.08 * _smooth_noise(rng, h, w, 10, octaves=2))[..., None]
    out = _blend(region, colour, np.full((h, w), 0.95, np.float32))
    # cracks and thrombosed vessels: dark random walks
    cracks = np.zeros((h, w), np.float32)
    ys, xs = np.nonzero(mask)
    count = int(min(25, float(mask.sum()) / (scale * scale * 0.003) + 2)) if ys.size else 0
    for _ in range(count):
        i = rng.integers(ys.size)
        steps = rng.integers(4, 10)
        heading = rng.uniform(0, 2 * math.pi)
        pts = [(float(xs[i]), float(ys[i]))]
        for _ in range(steps):
            heading += rng.normal(0, 0.6)
            step = rng.uniform(0.01, 0.03) * scale
            pts.append((pts[-1][0] + step * math.cos(heading), pts[-1][1] + step * math.sin(heading)))
        cv2.polylines(cracks, [np.round(pts).astype(np.int32)], False, 1.0, int(rng.integers(1, 3)))
    crack_colour = np.array((0.10, 0.06, 0.05), np.float32) if first < 3 else np.array((0.45, 0.42, 0.40), np.float32)
    out = _blend(out, crack_colour, cracks * mask * rng.uniform(0.6, 0.9))
    return out


# ----------------------------------------------------------------------------- scenes


@dataclass
class _Scene:
    image: np.ndarray  # (Hc, Wc, 3) float32, 0..1, the canvas
    labels: np.ndarray  # (Hc, Wc) uint8 classes
    margin: int
    shift: np.ndarray  # camera path: start (x, y) and per-frame velocity, pixels
    velocity: np.ndarray
    rotation: tuple[float, float]  # degrees: start, per frame
    zoom: tuple[float, float]  # start, per frame
    blur_sigma: float
    motion_blur: float  # probability of a motion-blurred frame
    noise_sigma: float  # 0..1 units
    noise_bank: np.ndarray  # (H + 32, W + 32, 3) float32 unit noise, cropped per frame
    flicker: float


def _draw_scene(rng, width: int, height: int, family: str = "clinic") -> _Scene:
    margin = int(round(0.08 * max(width, height)))
    ch, cw = height + 2 * margin, width + 2 * margin
    scale = float(min(height, width))  # sizes relative to the frame the viewer sees
    image = _draw_background(rng, ch, cw, family)
    labels = np.zeros((ch, cw), np.uint8)
    clinic = family == "clinic"

    # one person per scene: one skin type, slight variation between parts
    if clinic:
        skin_type = int(rng.integers(len(FITZPATRICK_RGB)))
        tone = _jitter_colour(rng, FITZPATRICK_RGB[skin_type], 0.08)
    else:
        tone = variation.skin_tone(rng, FITZPATRICK_RGB)
    main = str(rng.choice(["arm", "leg", "trunk", "hand", "face"], p=[0.25, 0.2, 0.25, 0.15, 0.15]))
    kinds = [main] + [str(rng.choice(["arm", "hand", "leg"])) for _ in range(rng.integers(0, 2))]
    if family == "no_skin":
        kinds = []
    light = np.array([math.cos(a := rng.uniform(0, 2 * math.pi)), math.sin(a)], np.float32)
    for kind in kinds:
        part, hair = _draw_body_part(rng, kind, ch, cw)
        if not part.any():
            continue
        part_tone = _jitter_colour(rng, tone, 0.04)
        h, w = part.shape
        dist = cv2.distanceTransform(part, cv2.DIST_L2, 5)
        height_field = np.sqrt(np.clip(dist / max(1.0, float(dist.max())), 0, 1))
        # round-body shading: darker towards the silhouette, brighter towards the light
        gy, gx = np.gradient(cv2.GaussianBlur(height_field, (0, 0), 3))
        facing = np.clip(1.0 + 6.0 * (gx * light[0] + gy * light[1]), 0.7, 1.3)
        shading = (0.55 + 0.45 * height_field) * facing
        texture = 1.0 + 0.05 * _smooth_noise(rng, h, w, 6, octaves=3) + 0.02 * _smooth_noise(rng, h, w, max(h, w) / 4, octaves=1)
        skin = part_tone[None, None, :] * (shading * texture)[..., None]
        # mild natural redness (knuckles, cheeks, pressure) so healthy skin is not one flat colour
        redness = np.clip(_smooth_noise(rng, h, w, 3) - 0.8, 0, 1) * rng.uniform(0.05, 0.15)
        skin = _blend(skin, part_tone * np.array((1.05, 0.75, 0.72), np.float32), redness)
        # freckles and moles
        spots = np.clip((_smooth_noise(rng, h, w, max(h, w) / 5, octaves=1) - 2.6) * 2, 0, 1) * rng.uniform(0, 0.6)
        skin = _blend(skin, part_tone * 0.55, spots)
        alpha = cv2.GaussianBlur(part.astype(np.float32), (0, 0), 0.8)
        _blend_into(image, skin, alpha)
        labels[part > 0] = HEALTHY_SKIN
        if not clinic and rng.random() < 0.35:
            variation.add_body_hair(rng, image, part)
        if hair is not None:
            hair_colour = _jitter_colour(rng, [(0.12, 0.09, 0.07), (0.35, 0.22, 0.12), (0.65, 0.55, 0.35)][rng.integers(3)], 0.1)
            strands = 1.0 + 0.25 * _smooth_noise(rng, h, w, max(h, w) / 3, octaves=1)
            hair_alpha = cv2.GaussianBlur(hair.astype(np.float32), (0, 0), 1.5)
            _blend_into(image, hair_colour[None, None, :] * strands[..., None], hair_alpha)
            labels[hair > 0] = BACKGROUND
    skin_any = (labels == HEALTHY_SKIN).astype(np.uint8)  # wounds lie on skin only

    # wounds: most scenes have one to three; some have none so healthy skin is seen whole
    n_wounds = 0 if rng.random() < (0.06 if clinic else 0.12) else int(rng.choice([1, 2, 3, 4], p=[0.35, 0.35, 0.2, 0.1]))
    dist = cv2.distanceTransform(skin_any, cv2.DIST_L2, 5)
    burn_labels = np.zeros_like(labels)
    for _ in range(n_wounds):
        if family == "varied":
            outline = "streak" if rng.random() < 0.35 else "blob"
        else:
            outline = "contact" if family == "contact" else "blob"
        wound = _wound_zones(rng, skin_any, dist, ch, cw, scale, outline)
        if wound is None:
            break
        y0, x0, zones = wound
        box = burn_labels[y0 : y0 + zones.shape[0], x0 : x0 + zones.shape[1]]
        np.copyto(box, zones, where=zones > 0)
    # paint each depth over its whole extent (one call per class over the burns' bounding box)
    ys, xs = np.nonzero(burn_labels)
    if ys.size:
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        pad = 3
        y0, x0 = max(0, y0 - pad), max(0, x0 - pad)
        y1, x1 = min(ch, y1 + pad), min(cw, x1 + pad)
        region = image[y0:y1, x0:x1]
        zone = burn_labels[y0:y1, x0:x1]
        painted = region.copy()
        painters = {
            SUPERFICIAL: lambda m: _paint_superficial(rng, region, tone, m, light),
            SUPERFICIAL_PARTIAL: lambda m: _paint_superficial_partial(rng, region, tone, m, light, scale),
            DEEP_PARTIAL: lambda m: _paint_deep_partial(rng, region, tone, m, light, scale),
            FULL_THICKNESS: lambda m: _paint_full_thickness(rng, region, tone, m, light, scale),
        }
        # keep the body's shading on the wound so it sits on a round limb, not a flat sticker
        lum = region.mean(2)
        body_light = np.clip(lum / max(1e-3, float(np.median(lum[zone > 0]))), 0.6, 1.3)
        for depth, paint in painters.items():
            m = (zone == depth).astype(np.float32)
            if not m.any():
                continue
            layer = paint(m) * body_light[..., None] ** 0.6
            if not clinic:  # the same depth looks a little different from wound to wound
                layer = layer * rng.uniform(0.9, 1.1, 3).astype(np.float32)
            alpha = cv2.GaussianBlur(m, (0, 0), 0.9) * (zone > 0)
            painted = _blend(painted, layer, alpha)
        image[y0:y1, x0:x1] = painted
        labels[burn_labels > 0] = burn_labels[burn_labels > 0]

    # lighting: a gradient across the scene, vignetting, colour temperature
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = ((xx - cw / 2) * math.cos(angle) + (yy - ch / 2) * math.sin(angle)) / max(ch, cw)
    r2 = ((xx - cw / 2) ** 2 + (yy - ch / 2) ** 2) / (0.25 * (ch * ch + cw * cw))
    gain = rng.uniform(0.75, 1.15) * (1.0 + rng.uniform(0.0, 0.6) * ramp) * (1.0 - rng.uniform(0.0, 0.35) * r2)
    warmth = rng.uniform(-0.08, 0.08)
    tint = np.array((1.0 + warmth, 1.0, 1.0 - warmth), np.float32)
    image = image * gain[..., None] * tint
    np.clip(image, 0.0, 1.0, out=image)
    if not clinic:
        image = variation.apply_look(image, variation.camera_look(rng))

    return _Scene(
        image=image.astype(np.float32),
        labels=labels,
        margin=margin,
        shift=rng.uniform(-10, 10, 2).astype(np.float32),
        velocity=rng.uniform(-1.2, 1.2, 2).astype(np.float32),
        rotation=(float(rng.uniform(-2, 2)), float(rng.uniform(-0.15, 0.15))),
        zoom=(float(rng.uniform(1.0, 1.05) if clinic else rng.uniform(0.8, 1.35)), float(rng.uniform(0.0, 0.003))),
        blur_sigma=float(rng.choice([0.0, rng.uniform(0.3, 1.3 if clinic else 2.2)], p=[0.3, 0.7])),
        motion_blur=float(rng.uniform(0.0, 0.3)),
        noise_sigma=float(rng.uniform(0.004, 0.025 if clinic else 0.045)),
        noise_bank=rng.standard_normal((height + 32, width + 32, 3), dtype=np.float32),
        flicker=float(rng.uniform(0.0, 0.03)),
    )


def _camera(scene: _Scene, index: int, width: int, height: int, rng) -> np.ndarray:
    """2x3 affine from canvas to frame for frame `index` of the scene."""
    ch, cw = scene.labels.shape
    angle = scene.rotation[0] + scene.rotation[1] * index + rng.normal(0, 0.05)
    zoom = scene.zoom[0] + scene.zoom[1] * index
    shift = scene.shift + scene.velocity * index + rng.normal(0, 0.4, 2)
    matrix = cv2.getRotationMatrix2D((cw / 2.0, ch / 2.0), angle, zoom)
    matrix[0, 2] += -scene.margin + float(shift[0])
    matrix[1, 2] += -scene.margin + float(shift[1])
    return matrix


def _render_frame(scene: _Scene, index: int, width: int, height: int, rng):
    matrix = _camera(scene, index, width, height, rng)
    frame = cv2.warpAffine(scene.image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    mask = cv2.warpAffine(scene.labels, matrix, (width, height), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT101)
    sigma = scene.blur_sigma * rng.uniform(0.8, 1.2)
    if rng.random() < scene.motion_blur:
        length = int(rng.integers(3, 8))
        kernel = np.zeros((length, length), np.float32)
        a = rng.uniform(0, math.pi)
        c = (length - 1) / 2
        cv2.line(kernel, (int(round(c - c * math.cos(a))), int(round(c - c * math.sin(a)))),
                 (int(round(c + c * math.cos(a))), int(round(c + c * math.sin(a)))), 1.0, 1)
        frame = cv2.filter2D(frame, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT101)
    elif sigma > 0.25:
        frame = cv2.GaussianBlur(frame, (0, 0), sigma)
    # sensor noise: stronger in bright pixels (shot noise) plus a floor (read noise)
    dy, dx = rng.integers(0, 33, 2)
    noise = scene.noise_bank[dy : dy + height, dx : dx + width]
    frame = frame * (1.0 + rng.normal(0, scene.flicker))
    frame = frame + noise * (scene.noise_sigma * (0.4 + 0.6 * np.sqrt(np.clip(frame, 0, 1))))
    frame_u8 = cv2.convertScaleAbs(frame, alpha=255.0)  # rounds and saturates to 0..255
    return np.ascontiguousarray(frame_u8), mask


def _check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    return family


def scene_frames(seed: int, scene_index: int, count: int, size=DEFAULT_SIZE, family: str = "clinic"):
    """The first `count` frames of scene `scene_index` of `seed`: list of (frame_rgb, mask).

    Each scene is independent of the others (its own SeedSequence), so callers may draw scenes
    in parallel processes and get the same arrays as `iter_frames`.
    """
    width, height = (int(v) for v in size)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(scene_index),)))
    scene = _draw_scene(rng, width, height, _check_family(family))
    return [_render_frame(scene, i, width, height, rng) for i in range(count)]


def iter_frames(
    frames: int, seed: int, size=DEFAULT_SIZE, frames_per_scene: int = DEFAULT_FRAMES_PER_SCENE, family: str = "clinic"
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield `frames` pairs (frame_rgb (H, W, 3) uint8, mask (H, W) uint8 of class indices).

    size is (width, height). Same arguments -> identical arrays, whatever the number of threads.
    Arguments are checked at the call (ValueError), not at the first frame.
    """
    width, height = _check_args(frames, seed, size, frames_per_scene)
    return _frames(frames, seed, width, height, frames_per_scene, _check_family(family))


def _frames(frames: int, seed: int, width: int, height: int, frames_per_scene: int, family: str):
    done = 0
    scene_index = 0
    while done < frames:
        count = min(frames_per_scene, frames - done)
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(scene_index,)))
        scene = _draw_scene(rng, width, height, family)
        for i in range(count):
            yield _render_frame(scene, i, width, height, rng)
        done += count
        scene_index += 1


# ----------------------------------------------------------------------------- files


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def generate(
    out_dir,
    frames: int,
    seed: int,
    size=DEFAULT_SIZE,
    frames_per_scene: int = DEFAULT_FRAMES_PER_SCENE,
    fps: float = 30,
    png: bool = False,
    progress: Callable[[int, int], None] | None = None,
    family: str = "clinic",
) -> dict:
    """Write a synthetic recording with ground truth to `out_dir` and return its manifest.

    Files: frames.mp4 (MPEG-4 part 2, 'mp4v', RGB frames stored as BGR as OpenCV expects),
    masks/NNNNNN.png (8-bit class indices), frames/NNNNNN.png when `png`, manifest.json.

    The mp4 bytes were found identical for identical frames across runs and processes with
    OpenCV 5.0's FFmpeg backend (no creation time is written); the manifest still records the
    video's hash only as information, while masks and PNG frames carry the reproducible hashes.
    """
    width, height = _check_args(frames, seed, size, frames_per_scene, even=True)
    _check_family(family)
    if not (isinstance(fps, (int, float)) and 0 < fps <= 1000):
        raise ValueError(f"fps must be a number in (0, 1000], got {fps!r}")
    out = Path(out_dir)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    if png:
        (out / "frames").mkdir(exist_ok=True)
    video_path = out / "frames.mp4"
    writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV could not open {video_path} for writing with the 'mp4v' codec")
    totals = np.zeros(NUM_CLASSES, np.int64)
    mask_hashes: dict[str, str] = {}
    frame_hashes: dict[str, str] = {}
    try:
        for i, (frame, mask) in enumerate(iter_frames(frames, seed, (width, height), frames_per_scene, family)):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            name = f"{i:06d}.png"
            ok, encoded = cv2.imencode(".png", mask)
            if not ok:
                raise RuntimeError(f"could not encode mask {name}")
            data = encoded.tobytes()
            (out / "masks" / name).write_bytes(data)
            mask_hashes[name] = _sha256_bytes(data)
            if png:
                ok, encoded = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                data = encoded.tobytes()
                (out / "frames" / name).write_bytes(data)
                frame_hashes[name] = _sha256_bytes(data)
            totals += np.bincount(mask.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
            if progress is not None:
                progress(i + 1, frames)
    finally:
        writer.release()
    manifest = {
        "generator": "holoburn synth",
        "generator_version": GENERATOR_VERSION,
        "family": family,
        "seed": int(seed),
        "size": [width, height],
        "fps": fps,
        "frames": int(frames),
        "frames_per_scene": int(frames_per_scene),
        "video": {
            "file": "frames.mp4",
            "fourcc": "mp4v",
            "sha256": _sha256_bytes(video_path.read_bytes()),
            "note": "lossy; decoded frames differ from the rendered ones (PNG frames are exact)",
        },
        "classes": list(CLASS_NAMES),
        "pixels_per_class": {name: int(n) for name, n in zip(CLASS_NAMES, totals)},
        "masks": {"dir": "masks", "format": "8-bit PNG, class index per pixel", "sha256": mask_hashes},
        "note": "synthetic images drawn by holoburn synth; not clinical data",
    }
    if png:
        manifest["frames_png"] = {"dir": "frames", "sha256": frame_hashes}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


# ----------------------------------------------------------------------------- command line


def add_synth_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--frames", type=int, default=300, help="number of frames (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=parse_size, default=DEFAULT_SIZE, help="WIDTHxHEIGHT (default 640x480)")
    parser.add_argument(
        "--frames-per-scene", type=int, default=DEFAULT_FRAMES_PER_SCENE, help="frames before a new scene (default 15)"
    )
    parser.add_argument("--fps", type=float, default=30.0, help="video frame rate (default 30)")
    parser.add_argument("--png", action="store_true", help="also write every frame as a lossless PNG")
    parser.add_argument(
        "--family", choices=(*FAMILIES, "independent"), default="clinic",
        help="scene family: clinic (default), varied (training), no_skin, contact (held out of training); "
             "independent (app/synthesis/independent.py, only with --coco)",
    )
    parser.add_argument("--coco", action="store_true",
                        help="write photographs (images/*.jpg) and COCO polygons (annotations.json) instead of a "
                             "video: annotated photos as a clinic would bring them, for `holoburn dataset import`")
    return parser


def run_synth(args: argparse.Namespace) -> dict:
    if args.coco:
        from holoburn.app.synthesis.coco import write_coco
        from holoburn.app.synthesis.independent import independent_frames

        if args.family == "independent":
            pairs = independent_frames(args.frames, args.seed, args.size)
        else:
            pairs = list(iter_frames(args.frames, args.seed, args.size, 1, family=args.family))
        coco = write_coco(args.out, pairs)
        print(f"synth: wrote {len(coco['images'])} photographs and {len(coco['annotations'])} COCO polygons "
              f"to {os.path.abspath(args.out)}")
        return coco
    if args.family == "independent":
        raise BadInput("--family independent writes only --coco photographs (it has no video form)")

    def report(done, total):
        if done == total or done % 100 == 0:
            print(f"synth: {done}/{total} frames", flush=True)

    manifest = generate(
        args.out,
        frames=args.frames,
        seed=args.seed,
        size=args.size,
        frames_per_scene=args.frames_per_scene,
        fps=args.fps,
        png=args.png,
        progress=report,
        family=args.family,
    )
    print(f"synth: wrote {manifest['frames']} frames to {os.path.abspath(args.out)}")
    return manifest
