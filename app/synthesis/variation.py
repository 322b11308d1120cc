"""Domain randomisation for `holoburn synth`: what varies between scenes beyond the clinic look.

Scene families (`synth.FAMILIES`):
- clinic: the original scenes (clinical backgrounds, blob-shaped wounds); the bundled sample.
- varied: the training family. Backgrounds are real photographs (`photos.TRAINING_PHOTOS`) or
  clinical textures; red, orange and white distractors (fruit, fabric, dressings, plastic);
  skin tones anywhere between Fitzpatrick I and VI; wounds as blobs or scald streaks; strong
  white balance, exposure and gamma changes; more blur and noise. Some scenes show skin only.
- no_skin: the same backgrounds and distractors with no person: every pixel is background.
- contact: like varied, but every wound has the outline of a contact burn (polygon, disc,
  bar or ring with a sharp edge). No training scene has such an outline: this family measures
  how the model does on a shape it never saw.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from holoburn.app.synthesis import photos

_PHOTO_CACHE: dict[str, np.ndarray] = {}


def _training_photo(rng) -> np.ndarray:
    name = sorted(photos.TRAINING_PHOTOS)[int(rng.integers(len(photos.TRAINING_PHOTOS)))]
    if name not in _PHOTO_CACHE:
        _PHOTO_CACHE[name] = photos.load_photo(name).astype(np.float32) / 255.0
    return _PHOTO_CACHE[name]


def texture_background(rng, height: int, width: int, smooth_noise) -> np.ndarray:
    """A textured surface: carpet or towel pile, stripes or checks of fabric, in random colours."""
    base = rng.uniform(0.1, 0.95, 3).astype(np.float32)
    other = rng.uniform(0.1, 0.95, 3).astype(np.float32)
    kind = int(rng.integers(3))
    if kind == 0:  # pile: fine noise
        t = 0.5 + 0.25 * smooth_noise(rng, height, width, max(height, width) / rng.uniform(2, 6), octaves=2)
        t = np.clip(t, 0, 1) * 0.35
    else:  # stripes (1) or checks (2)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(0.03, 0.15) * max(height, width)
        t = (np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period) > rng.uniform(-0.5, 0.5)).astype(np.float32)
        if kind == 2:
            t2 = np.sin(2 * math.pi * (-xx * math.sin(angle) + yy * math.cos(angle)) / period) > 0
            t = np.abs(t - t2.astype(np.float32))
        t = cv2.GaussianBlur(t, (0, 0), 1.0)
    image = base[None, None, :] * (1 - t[..., None]) + other[None, None, :] * t[..., None]
    return (image * (1.0 + 0.05 * smooth_noise(rng, height, width, 4))[..., None]).astype(np.float32)


def add_body_hair(rng, image: np.ndarray, skin: np.ndarray) -> None:
    """In place: short dark hairs over skin (the labels stay skin, as a clinician would label them)."""
    ys, xs = np.nonzero(skin)
    if ys.size == 0:
        return
    layer = np.zeros(skin.shape, np.float32)
    heading = rng.uniform(0, math.pi)
    length = rng.uniform(0.006, 0.02) * max(skin.shape)
    for i in rng.integers(0, ys.size, int(rng.integers(100, 1200))):
        a = heading + rng.normal(0, 0.3)
        x0, y0 = float(xs[i]), float(ys[i])
        cv2.line(layer, (int(x0), int(y0)), (int(x0 + length * math.cos(a)), int(y0 + length * math.sin(a))), 1.0, 1)
    colour = np.array([(0.08, 0.06, 0.05), (0.30, 0.20, 0.12), (0.55, 0.45, 0.30)][rng.integers(3)], np.float32)
    alpha = layer * (skin > 0) * rng.uniform(0.3, 0.7)
    image += (colour - image) * alpha[..., None]


def photo_background(rng, height: int, width: int) -> np.ndarray:
    """A random crop of a training photograph, scaled to (height, width), float32 RGB 0..1."""
    photo = _training_photo(rng)
    ph, pw = photo.shape[:2]
    if rng.random() < 0.5:
        photo = photo[:, ::-1]
    zoom = rng.uniform(0.35, 1.0)  # share of the photo's short side the crop takes
    aspect = width / height
    ch = int(min(ph, pw / aspect) * zoom)
    cw = int(ch * aspect)
    y = int(rng.integers(0, ph - ch + 1))
    x = int(rng.integers(0, pw - cw + 1))
    crop = np.ascontiguousarray(photo[y : y + ch, x : x + cw])
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)


def add_distractors(rng, image: np.ndarray, smooth_noise, count: int) -> None:
    """In place: objects that look a little like burns but are not skin (labels stay background).

    Red and orange fruit (shaded, with a highlight), red or pink fabric with folds, dressings with
    a yellow or blood-red stain, orange and red plastic.
    """
    height, width = image.shape[:2]
    long_side = float(max(height, width))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for _ in range(count):
        kind = int(rng.integers(5))
        mask = np.zeros((height, width), np.uint8)
        cx, cy = float(rng.uniform(0, width)), float(rng.uniform(0, height))
        size = rng.uniform(0.05, 0.18) * long_side
        if kind == 0:  # fruit: a shaded sphere with a specular highlight
            colour = np.array([(0.80, 0.10, 0.08), (0.95, 0.45, 0.05), (0.85, 0.25, 0.15), (0.55, 0.05, 0.10)][rng.integers(4)])
            colour = np.clip(colour * rng.uniform(0.8, 1.15, 3), 0, 1)
            cv2.circle(mask, (int(cx), int(cy)), int(size * 0.6), 1, -1)
            r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / max(1.0, size * 0.6)
            shade = np.clip(1.1 - 0.55 * r, 0.3, 1.1)
            glint = np.exp(-(((xx - cx + size * 0.2) ** 2 + (yy - cy + size * 0.2) ** 2) / (2 * (size * 0.08) ** 2)))
            layer = colour[None, None, :] * shade[..., None] + 0.7 * glint[..., None]
        elif kind == 1:  # fabric: a folded patch
            colour = np.array([(0.75, 0.12, 0.15), (0.90, 0.55, 0.60), (0.85, 0.40, 0.10), (0.60, 0.20, 0.30)][rng.integers(4)])
            colour = np.clip(colour * rng.uniform(0.8, 1.15, 3), 0, 1)
            box = cv2.boxPoints(((cx, cy), (size * rng.uniform(1.0, 2.5), size * rng.uniform(0.6, 1.5)), rng.uniform(0, 180)))
            cv2.fillConvexPoly(mask, box.astype(np.int32), 1)
            angle = rng.uniform(0, math.pi)
            folds = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) / (size * rng.uniform(0.08, 0.2)))
            layer = colour[None, None, :] * (0.85 + 0.15 * folds)[..., None]
        elif kind == 2:  # dressing with a stain
            box = cv2.boxPoints(((cx, cy), (size * rng.uniform(0.8, 1.8), size * rng.uniform(0.6, 1.2)), rng.uniform(0, 180)))
            cv2.fillConvexPoly(mask, box.astype(np.int32), 1)
            stain_colour = np.array([(0.85, 0.70, 0.25), (0.60, 0.08, 0.08), (0.75, 0.45, 0.30)][rng.integers(3)])
            stain = np.clip(smooth_noise(rng, height, width, 6) - rng.uniform(0.0, 1.2), 0, 1)
            white = np.array((0.94, 0.93, 0.90), np.float32)
            layer = white[None, None, :] + (stain_colour - white)[None, None, :] * (0.8 * stain)[..., None]
        elif kind == 4:  # soap, a ruler or a tape measure: pale yellow or white with markings
            box = cv2.boxPoints(((cx, cy), (size * rng.uniform(1.0, 4.0), size * rng.uniform(0.15, 0.7)), rng.uniform(0, 180)))
            cv2.fillConvexPoly(mask, box.astype(np.int32), 1)
            colour = np.array([(0.95, 0.85, 0.30), (0.96, 0.96, 0.94), (0.90, 0.80, 0.55)][rng.integers(3)])
            ticks = (np.sin(xx / max(2.0, size * 0.04)) > 0.9).astype(np.float32) * rng.uniform(0, 0.6)
            layer = colour[None, None, :] * (1 - ticks[..., None] * 0.8)
        else:  # plastic: a flat bright object with a sharp edge
            colour = np.array([(0.95, 0.35, 0.05), (0.90, 0.10, 0.10), (0.95, 0.75, 0.10), (0.20, 0.35, 0.85)][rng.integers(4)])
            axes = (int(size * rng.uniform(0.4, 1.0)), int(size * rng.uniform(0.2, 0.6)))
            cv2.ellipse(mask, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, 1, -1)
            layer = np.broadcast_to(colour[None, None, :] * rng.uniform(0.8, 1.1), image.shape)
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.0)
        image += (layer.astype(np.float32) - image) * alpha[..., None]


def skin_tone(rng, fitzpatrick: np.ndarray) -> np.ndarray:
    """A tone anywhere between two neighbouring Fitzpatrick types, with a red or yellow undertone."""
    at = rng.uniform(0, len(fitzpatrick) - 1)
    low = int(at)
    high = min(low + 1, len(fitzpatrick) - 1)
    tone = fitzpatrick[low] * (1 - (at - low)) + fitzpatrick[high] * (at - low)
    undertone = rng.uniform(-0.06, 0.06)
    tone = tone * np.array((1 + undertone, 1.0, 1 - undertone), np.float32) * rng.uniform(0.9, 1.08)
    return np.clip(tone, 0, 1).astype(np.float32)


def streak_outline(rng, box_h: int, box_w: int, radius: float) -> np.ndarray:
    """A scald: a pool that runs off in streaks in one direction, with splash drops (uint8 0/1)."""
    mask = np.zeros((box_h, box_w), np.uint8)
    centre = np.array([box_w / 2.0, box_h / 2.0])
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (int(radius * 0.6), int(radius * 0.45)), rng.uniform(0, 180), 0, 360, 1, -1)
    down = rng.uniform(0, 2 * math.pi)
    for _ in range(int(rng.integers(2, 6))):
        heading = down + rng.normal(0, 0.35)
        length = radius * rng.uniform(0.8, 1.7)
        width = radius * rng.uniform(0.12, 0.3)
        end = centre + length * np.array([math.cos(heading), math.sin(heading)])
        pts = np.linspace(centre, end, 8)
        for i, p in enumerate(pts):
            cv2.circle(mask, (int(p[0]), int(p[1])), max(1, int(width * (1 - 0.6 * i / 7))), 1, -1)
    for _ in range(int(rng.integers(0, 6))):  # splash drops
        a, d = rng.uniform(0, 2 * math.pi), radius * rng.uniform(0.7, 1.6)
        p = centre + d * np.array([math.cos(a), math.sin(a)])
        cv2.circle(mask, (int(p[0]), int(p[1])), max(1, int(radius * rng.uniform(0.04, 0.1))), 1, -1)
    return mask


def contact_outline(rng, box_h: int, box_w: int, radius: float) -> np.ndarray:
    """A contact burn (iron, pan, heater bar, lid): a sharp-edged geometric shape (uint8 0/1)."""
    mask = np.zeros((box_h, box_w), np.uint8)
    cx, cy = box_w / 2.0, box_h / 2.0
    kind = int(rng.integers(4))
    angle = rng.uniform(0, 180)
    if kind == 0:  # polygon: triangle (iron tip) to octagon
        sides = int(rng.integers(3, 9))
        t = np.radians(angle) + np.arange(sides) * 2 * math.pi / sides
        pts = np.stack([cx + radius * 0.9 * np.cos(t), cy + radius * 0.9 * np.sin(t)], 1)
        cv2.fillConvexPoly(mask, np.round(pts).astype(np.int32), 1)
    elif kind == 1:  # disc
        cv2.circle(mask, (int(cx), int(cy)), int(radius * 0.85), 1, -1)
    elif kind == 2:  # bar (heater, grill): one or parallel rectangles
        for k in range(int(rng.integers(1, 4))):
            offset = (k - 1) * radius * 0.5
            box = cv2.boxPoints(((cx + offset * math.sin(np.radians(angle)), cy - offset * math.cos(np.radians(angle))),
                                 (radius * 1.8, radius * 0.28), angle))
            cv2.fillConvexPoly(mask, np.round(box).astype(np.int32), 1)
    else:  # ring (a lid or cup rim)
        cv2.circle(mask, (int(cx), int(cy)), int(radius * 0.85), 1, max(2, int(radius * 0.3)))
    return mask


def outline_field(mask: np.ndarray, radius: float) -> np.ndarray:
    """0 at the deepest point of an outline, 1 on its edge, > 1 outside (the depth bands follow it)."""
    inside = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    outside = cv2.distanceTransform(1 - mask, cv2.DIST_L2, 5)
    field = np.where(mask > 0, 1.0 - inside / max(1.0, float(inside.max())), 1.0 + outside / max(1.0, radius))
    return field.astype(np.float32)


def camera_look(rng) -> dict:
    """Per-scene camera and light: white balance, exposure, gamma, contrast."""
    warmth = rng.uniform(-0.22, 0.22)
    return {
        "gains": np.array((1 + warmth, 1 + rng.uniform(-0.07, 0.07), 1 - warmth), np.float32) * rng.uniform(0.6, 1.35),
        "gamma": float(rng.uniform(0.75, 1.35)),
        "contrast": float(rng.uniform(0.8, 1.2)),
    }


def apply_look(image: np.ndarray, look: dict) -> np.ndarray:
    out = np.clip(image * look["gains"], 0, 1) ** look["gamma"]
    out = (out - 0.5) * look["contrast"] + 0.5
    return np.clip(out, 0, 1).astype(np.float32)
