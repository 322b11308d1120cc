"""An independent family of synthetic burn scenes, for measuring generalisation only.

The shipped segmentation model was trained on scenes from another generator. A score
measured on scenes from that same generator says how well the model learnt *that*
generator, not how well it does on burns it has never seen. This module is a second,
held-out scene family, written independently of the training generator (without
reading it) from the clinical description of the burn depths alone. It must NEVER be
used for training, augmentation or model selection: its only job is to be unseen.

What a scene is made of (all of it procedural, numpy + OpenCV only):

* background: a painted wall, a (striped, folded) bed sheet, a tiled floor seen in
  perspective, a studio gradient, a crinkled surgical drape, or a wall cluttered with
  objects and cables; some are deliberately skin-coloured (wood, cardboard, beige);
* body parts built from splines, capsules and superellipses: a limb (bent centreline,
  tapering radius), a torso or back, a hand (palm, four fingers, thumb, nails), a foot
  (sole, toes), a face (hair, eyes, brows, lips, nose); one or two per scene, given a
  rounded relief from the distance to their outline;
* healthy skin across Fitzpatrick I-VI, with blotchy melanin and redness, pores,
  hairs, freckles, lighter palms and soles on dark skin;
* burns from three mechanisms: flame (unions of random blobs with ragged edges),
  scald (a splash with gravity drips and satellite droplets) and contact (a disc, a
  ring, a bar grill, a rounded plate, an iron tip); the depth zones are cut from a
  severity field, usually deepest in the middle (nested) but sometimes patchy or an
  unrelated mosaic;
* the look of each depth: superficial = red, dry, matte erythema; superficial partial =
  moist glistening pink-red with Voronoi blisters (straw-coloured domes, white rims,
  deroofed wet bases); deep partial = mottled pink and white, drier, with red dots;
  full thickness = white waxy, tan leathery, or charred black eschar with ash speckle,
  cracks and thrombosed vessels, dry;
* occluders lying over the scene (a ruler, gauze, gloved fingers, an ECG electrode);
* Blinn-Phong lighting from a key and a fill light with a colour cast, a cast shadow,
  a cheap subsurface softening of the shading on skin, auto-exposure, a filmic tone
  curve, vignetting, shot and read noise, defocus or motion blur, and JPEG.

Roughly 7 % of the frames show skin with no burn. The class indices are those of
:mod:`holoburn.clinical.depth`.
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from holoburn.clinical.depth import (
    BACKGROUND,
    DEEP_PARTIAL,
    FULL_THICKNESS,
    HEALTHY_SKIN,
    SUPERFICIAL,
    SUPERFICIAL_PARTIAL,
)

__all__ = ["independent_frames"]

#: sRGB skin base colours, Fitzpatrick I (very light) to VI (very dark brown)
_SKIN_TONES = np.array(
    [
        (247, 220, 201),
        (236, 194, 164),
        (214, 166, 127),
        (180, 126, 89),
        (131, 87, 60),
        (86, 57, 42),
    ],
    np.float32,
)

_NO_BURN_SHARE = 0.07


# ----------------------------------------------------------------------------- helpers


def _lin(srgb) -> np.ndarray:
    """sRGB 0..255 -> linear 0..1 (a plain 2.2 power is close enough here)."""
    return (np.clip(np.asarray(srgb, np.float32), 0, 255) / 255.0) ** 2.2


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int):
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs.setflags(write=False)
    ys.setflags(write=False)
    return xs, ys


@functools.lru_cache(maxsize=4)
def _tone_lut():
    """Linear light (sqrt-quantised, 0..4) -> sRGB uint8, linear with a soft highlight shoulder."""
    x = 4.0 * (np.arange(4096, dtype=np.float64) / 4095.0) ** 2
    knee = 0.72
    y = np.where(x < knee, x, knee + (1 - knee) * (1 - np.exp(-(x - knee) / (1 - knee))))
    y = np.clip(y, 0, 1) ** (1 / 2.2)
    return np.round(y * 255).astype(np.uint8)


def _noise(rng, h, w, cell) -> np.ndarray:
    """Smooth value noise with features about `cell` px apart, roughly N(0, 1)."""
    cell = max(1.0, float(cell))
    gh, gw = int(h / cell) + 3, int(w / cell) + 3
    g = rng.standard_normal((gh, gw), dtype=np.float32)
    uh, uw = max(h + 1, int(gh * cell)), max(w + 1, int(gw * cell))
    up = cv2.resize(g, (uw, uh), interpolation=cv2.INTER_CUBIC)
    oy = int(rng.integers(0, uh - h))
    ox = int(rng.integers(0, uw - w))
    return up[oy : oy + h, ox : ox + w]


def _fbm(rng, h, w, cell, octaves=4, gain=0.5) -> np.ndarray:
    """Fractal sum of value noise, normalised to zero mean and unit deviation."""
    out = np.zeros((h, w), np.float32)
    amp = 1.0
    for _ in range(octaves):
        out += amp * _noise(rng, h, w, cell)
        cell /= 2.0
        amp *= gain
        if cell < 1.0:
            break
    out -= out.mean()
    out /= out.std() + 1e-6
    return out


def _streak_noise(rng, h, w, along, across, angle_deg) -> np.ndarray:
    """Anisotropic noise stretched along a direction (fibres, wrinkles, folds)."""
    d = int(math.hypot(h, w)) + 4
    gh, gw = int(d / across) + 3, int(d / along) + 3
    g = rng.standard_normal((gh, gw), dtype=np.float32)
    up = cv2.resize(g, (d, d), interpolation=cv2.INTER_CUBIC)
    m = cv2.getRotationMatrix2D((d / 2, d / 2), float(angle_deg), 1.0)
    m[0, 2] += w / 2 - d / 2
    m[1, 2] += h / 2 - d / 2
    out = cv2.warpAffine(up, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    out -= out.mean()
    out /= out.std() + 1e-6
    return out


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _blur(img, sigma):
    if sigma <= 0.05:
        return img
    return cv2.GaussianBlur(img, (0, 0), float(sigma))


def _lerp3(a, b, t):
    """a + (b - a) * t for (H, W, 3) images (or colours) with a (H, W) weight."""
    return a + (b - a) * t[..., None]


def _fill(mask, polys, value=1):
    # one call per polygon: a single fillPoly of several polygons uses parity, so overlaps would be holes
    for p in polys:
        cv2.fillPoly(mask, [np.round(np.asarray(p, np.float64) * 16).astype(np.int32)], value,
                     lineType=cv2.LINE_8, shift=4)
    return mask


def _superellipse(a, b, n, rng=None, wobble=0.0, count=96):
    t = np.linspace(0, 2 * np.pi, count, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    x = a * np.sign(c) * np.abs(c) ** (2 / n)
    y = b * np.sign(s) * np.abs(s) ** (2 / n)
    if rng is not None and wobble > 0:
        r = 1.0
        for k in (2, 3, 5):
            r = r + wobble * rng.normal() / k * np.cos(k * t + rng.uniform(0, 2 * np.pi))
        x, y = x * r, y * r
    return np.stack([x, y], 1)


def _capsule(p0, p1, r0, r1, count=10):
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    ang = math.atan2(d[1], d[0])
    a1 = np.linspace(ang - np.pi / 2, ang + np.pi / 2, count)
    a0 = np.linspace(ang + np.pi / 2, ang + 3 * np.pi / 2, count)
    return np.concatenate(
        [p1 + r1 * np.stack([np.cos(a1), np.sin(a1)], 1), p0 + r0 * np.stack([np.cos(a0), np.sin(a0)], 1)]
    )


def _bezier(ctrl, count=48):
    ctrl = np.asarray(ctrl, float)
    t = np.linspace(0, 1, count)[:, None]
    return (
        (1 - t) ** 3 * ctrl[0] + 3 * (1 - t) ** 2 * t * ctrl[1] + 3 * (1 - t) * t**2 * ctrl[2] + t**3 * ctrl[3]
    )


def _tube(centre, radii):
    """Polygon around a centreline with a radius per point."""
    d = np.gradient(centre, axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-9
    nrm = np.stack([-d[:, 1], d[:, 0]], 1)
    left = centre + nrm * radii[:, None]
    right = centre - nrm * radii[:, None]
    return np.concatenate([left, right[::-1]])


def _box(pts, margin, h, w):
    """Slices of the frame covering points plus a margin, or None when off-frame."""
    pts = np.asarray(pts)
    x0 = max(0, int(pts[:, 0].min() - margin))
    x1 = min(w, int(pts[:, 0].max() + margin) + 2)
    y0 = max(0, int(pts[:, 1].min() - margin))
    y1 = min(h, int(pts[:, 1].max() + margin) + 2)
    if x0 >= x1 or y0 >= y1:
        return None
    return (slice(y0, y1), slice(x0, x1)), np.array([x0, y0], float)


def _rot(ang):
    c, s = math.cos(ang), math.sin(ang)
    return np.array([[c, -s], [s, c]])


# ------------------------------------------------------------------------- body parts
#
# Each part is drawn in its own canonical frame (units of about a palm-width) and then
# placed with a centre, a scale (px per unit) and a rotation. A part is a dict of:
#   skin   - polygons whose union is the skin of the part
#   cut    - (polygon, linear rgb, kind) drawn over the skin and NOT skin (hair, eyes)
#   tint   - (polygon, linear rgb, alpha[, soft]): skin recoloured in place (lips, nails,
#            palm); soft is the width of the fade at its edge, in units
#   bumps  - (x, y, sx, sy, amp): Gaussian relief in canonical units (nose, navel)
#   lines  - (polyline, width, darkening): creases, mouth line
#   hairy  - density of body hair, hair_axis the direction of hair in canonical frame
#   dome   - how far (in units) the rounded relief reaches in from the outline


def _limb(rng, base):
    length = rng.uniform(3.2, 4.5)
    bend = rng.normal(0, 0.25, 2)
    ctrl = [(-length / 2, 0), (-length / 6, bend[0]), (length / 6, bend[1]), (length / 2, 0)]
    centre = _bezier(ctrl, 56)
    t = np.linspace(0, 1, len(centre))
    r0, r1 = rng.uniform(0.28, 0.45), rng.uniform(0.2, 0.36)
    radii = r0 + (r1 - r0) * t + rng.uniform(0, 0.06) * np.sin(np.pi * t * rng.uniform(1, 2))
    skin = [_tube(centre, radii)]
    # rounded ends (elbow, knee, stump) where the limb ends inside the frame
    skin.append(_capsule(centre[1], centre[0], radii[1], radii[0]))
    skin.append(_capsule(centre[-2], centre[-1], radii[-2], radii[-1]))
    return dict(skin=skin, cut=[], tint=[], bumps=[], lines=[], hairy=rng.uniform(0, 1), hair_axis=0.0,
                dome=float(radii.max()))


def _torso(rng, base, tone):
    a, b = rng.uniform(0.9, 1.1), rng.uniform(1.1, 1.4)
    skin = [_superellipse(a, b, rng.uniform(2.6, 4.0), rng, 0.05)]
    bumps, tint, lines = [], [], []
    if rng.random() < 0.5:  # front: navel, areolae
        bumps.append((rng.normal(0, 0.03), 0.35 * b, 0.04, 0.05, -0.06))
        areola = base * np.array([0.7, 0.55, 0.5]) * (0.9 if tone < 3 else 0.6)
        for sx in (-1, 1):
            tint.append((_superellipse(0.07, 0.07, 2) + (sx * 0.45 * a, -0.45 * b), areola, 0.8))
    else:  # back: a groove along the spine and shoulder blades
        bumps.append((0, 0, 0.05, 0.9 * b, -0.07))
        for sx in (-1, 1):
            bumps.append((sx * 0.42 * a, -0.5 * b, 0.22, 0.25, 0.05))
    return dict(skin=skin, cut=[], tint=tint, bumps=bumps, lines=lines, hairy=rng.uniform(0, 0.5),
                hair_axis=np.pi / 2, dome=0.45)


def _hand(rng, base, tone):
    skin, tint, lines, bumps = [], [], [], []
    palm = _superellipse(0.42, 0.48, 2.6, rng, 0.03)
    skin.append(palm)
    skin.append(_capsule((0, 0.3), (rng.normal(0, 0.1), 2.2), 0.34, 0.36))  # wrist, forearm
    palmar = rng.random() < 0.45
    spread = rng.uniform(0.02, 0.22)
    lengths = np.array([0.62, 0.74, 0.69, 0.53]) * rng.uniform(0.9, 1.1)
    skin_srgb = 255 * base ** (1 / 2.2)
    nail = _lin(skin_srgb * 0.55 + np.array([245, 200, 200]) * 0.45)
    for i in range(4):
        ang = -np.pi / 2 + spread * (i - 1.5) + rng.normal(0, 0.05)
        p0 = np.array([(-0.3 + 0.2 * i) * 0.95, -0.38])
        curl = rng.normal(0, 0.15)
        mid = p0 + 0.55 * lengths[i] * np.array([math.cos(ang), math.sin(ang)])
        tip = mid + 0.45 * lengths[i] * np.array([math.cos(ang + curl), math.sin(ang + curl)])
        r = 0.085 + 0.01 * (i in (1, 2))
        skin.append(_capsule(p0, mid, r, r * 0.95))
        skin.append(_capsule(mid, tip, r * 0.95, r * 0.85))
        if not palmar:
            dang = ang + curl
            nc = tip - 0.09 * np.array([math.cos(dang), math.sin(dang)])
            tint.append((_superellipse(0.085, 0.055, 2.4) @ _rot(dang).T + nc, nail, 0.85))
            bumps.append((mid[0], mid[1], 0.06, 0.06, 0.02))  # knuckle
        else:
            lines.append((np.array([mid + (-0.07, 0), mid + (0.07, 0)]), 0.012, 0.25))
    side = rng.choice([-1, 1])
    t0 = np.array([side * 0.36, 0.12])
    tang = -np.pi / 2 + side * rng.uniform(0.6, 1.1)
    t1 = t0 + 0.32 * np.array([math.cos(tang), math.sin(tang)])
    t2 = t1 + 0.26 * np.array([math.cos(tang - side * 0.3), math.sin(tang - side * 0.3)])
    skin.append(_capsule(t0, t1, 0.13, 0.11))
    skin.append(_capsule(t1, t2, 0.11, 0.09))
    if palmar:
        light = _lin(skin_srgb * 0.5 + np.array([232, 190, 170]) * 0.5)
        tint.append((_superellipse(0.36, 0.42, 2.4), light, 0.25 + 0.1 * tone, 0.12))
        for k in range(3):
            y = -0.2 + 0.17 * k + rng.normal(0, 0.03)
            lines.append((_bezier([(-0.38, y), (-0.1, y - 0.06), (0.1, y + 0.02), (0.35, y - 0.1)], 12), 0.012, 0.3))
    return dict(skin=skin, cut=[], tint=tint, bumps=bumps, lines=lines, hairy=0.0 if palmar else rng.uniform(0, 0.4),
                hair_axis=np.pi / 2, dome=0.2)


def _foot(rng, base, tone):
    ys = np.linspace(-0.6, 0.62, 24)
    half = np.interp(ys, [-0.6, -0.35, 0.05, 0.35, 0.62], [0.36, 0.43, 0.3, 0.31, 0.22])
    half = half * rng.uniform(0.9, 1.1)
    side = rng.choice([-1, 1])
    shift = side * 0.05 * np.cos(ys * 2)
    outline = np.concatenate([np.stack([shift - half, ys], 1), np.stack([shift + half, ys], 1)[::-1]])
    skin = [outline, _superellipse(0.3, 0.16, 2) + (0, 0.55)]
    tint, bumps = [], []
    skin_srgb = 255 * base ** (1 / 2.2)
    nail = _lin(skin_srgb * 0.6 + np.array([240, 205, 200]) * 0.4)
    sizes = [0.12, 0.08, 0.075, 0.068, 0.06]
    xs = [-0.24, -0.06, 0.08, 0.2, 0.3]
    plantar = rng.random() < 0.4
    for k in range(5):
        x = side * -xs[k] if side < 0 else xs[k]
        y0 = -0.55 + 0.045 * k * k / 2
        skin.append(_capsule((x, y0), (x, y0 - 0.16 + 0.015 * k), sizes[k], sizes[k] * 0.9))
        if not plantar:
            tint.append((_superellipse(sizes[k] * 0.7, sizes[k] * 0.6, 2.5) + (x, y0 - 0.18 + 0.015 * k), nail, 0.8))
    if not plantar and rng.random() < 0.7:
        skin.append(_capsule((0, 0.35), (rng.normal(0, 0.1), 2.6), 0.3, 0.36))  # ankle and leg
    if plantar:
        light = _lin(skin_srgb * 0.5 + np.array([228, 185, 165]) * 0.5)
        tint.append((outline * 0.85, light, 0.3 + 0.1 * tone, 0.1))
    return dict(skin=skin, cut=[], tint=tint, bumps=bumps, lines=[], hairy=0.0 if plantar else rng.uniform(0, 0.3),
                hair_axis=np.pi / 2, dome=0.22)


def _face(rng, base, tone):
    head = _superellipse(0.7, 0.92, 2.2, rng, 0.02)
    head[:, 0] *= 1 - 0.22 * np.clip(head[:, 1], 0, None) / 0.92
    skin = [head, np.array([(-0.36, 0.55), (0.36, 0.55), (0.42, 2.2), (-0.42, 2.2)])]
    for sx in (-1, 1):
        skin.append(_superellipse(0.09, 0.18, 2) + (sx * 0.68, 0.02))
    hair_rgb = _lin(rng.choice([(25, 20, 18), (60, 40, 28), (120, 85, 50), (190, 160, 110), (150, 150, 150)]))
    cut, tint, bumps, lines = [], [], [], []
    hair_low = rng.uniform(-0.6, -0.35)
    cap = _superellipse(0.76, 1.0, 2.3, rng, 0.03)
    cap = cap[cap[:, 1] < hair_low + 0.15 * np.abs(cap[:, 0])]
    if rng.random() < 0.85 and len(cap) > 3:
        cut.append((cap, hair_rgb, "hair"))
    eye_open = rng.uniform(0.35, 1.0)
    iris = _lin(rng.choice([(70, 45, 30), (40, 28, 20), (90, 120, 150), (100, 110, 70)]))
    for sx in (-1, 1):
        c = np.array([sx * 0.27, -0.1])
        cut.append((_superellipse(0.12, 0.045 * eye_open, 1.6) + c, _lin((215, 205, 195)), "eye"))
        cut.append((_superellipse(0.045, 0.04 * eye_open, 2) + c + (rng.normal(0, 0.01), 0), iris, "eye"))
        brow = _bezier([c + (-0.14, -0.1), c + (-0.05, -0.16), c + (0.05, -0.16), c + (0.15, -0.1)], 12)
        cut.append((_tube(brow, np.full(len(brow), 0.022)), hair_rgb * 0.8, "brow"))
        bumps.append((c[0], c[1], 0.12, 0.06, -0.05))  # eye socket
        bumps.append((sx * 0.33, 0.18, 0.14, 0.1, 0.03))  # cheek
    bumps.append((0, 0.08, 0.045, 0.2, 0.12))  # nose
    lip = base * (np.array([0.95, 0.55, 0.6]) if tone < 3 else np.array([0.8, 0.55, 0.62]))
    tint.append((_superellipse(0.17, 0.055, 2.2) + (0, 0.4), lip, 0.75))
    lines.append((np.array([(-0.15, 0.4), (0, 0.41), (0.15, 0.4)]), 0.01, 0.45))
    for sx in (-1, 1):
        lines.append((np.array([(sx * 0.05, 0.22), (sx * 0.06, 0.23)]), 0.02, 0.5))  # nostrils
    return dict(skin=skin, cut=cut, tint=tint, bumps=bumps, lines=lines, hairy=0.0, hair_axis=0.0, dome=0.35)


# ------------------------------------------------------------------------------ scene


class _Scene:
    def __init__(self, rng: np.random.Generator, w: int, h: int):
        self.rng, self.w, self.h = rng, w, h
        self.u = min(w, h) / 480.0  # length unit: px at 480 lines
        self.label = np.zeros((h, w), np.uint8)
        self.albedo = np.zeros((h, w, 3), np.float32)
        self.height = np.zeros((h, w), np.float32)
        self.ks = np.zeros((h, w), np.float32)
        self.shin = np.full((h, w), 10.0, np.float32)
        self.skin_soft = None

    # -- background --------------------------------------------------------------
    def background(self):
        rng, h, w, u = self.rng, self.h, self.w, self.u
        xs, ys = _grid(h, w)
        kind = rng.choice(["wall", "sheet", "tiles", "studio", "drape", "clutter"],
                          p=[0.18, 0.24, 0.14, 0.12, 0.12, 0.2])
        walls = [(200, 214, 200), (205, 215, 228), (226, 214, 190), (196, 196, 192), (236, 232, 225),
                 (215, 180, 150), (170, 130, 95)]
        col = _lin(np.array(walls[rng.integers(len(walls))]) + rng.normal(0, 8, 3))
        a = np.empty((h, w, 3), np.float32)
        a[:] = col
        hgt = np.zeros((h, w), np.float32)
        ks, shin = 0.02, 8.0
        if kind in ("wall", "clutter"):
            a *= (1 + 0.05 * _fbm(rng, h, w, 120 * u))[..., None]
            a *= (1 + 0.02 * _noise(rng, h, w, 2 * u))[..., None]
        elif kind == "sheet":
            sheets = [(238, 238, 236), (205, 220, 236), (200, 228, 210), (232, 222, 200), (236, 214, 222)]
            col = _lin(np.array(sheets[rng.integers(len(sheets))]) + rng.normal(0, 5, 3))
            ang = rng.uniform(0, 180)
            folds = _streak_noise(rng, h, w, rng.uniform(150, 400) * u, rng.uniform(25, 70) * u, ang + rng.normal(0, 20))
            hgt += folds * rng.uniform(8, 22) * u
            a[:] = col
            if rng.random() < 0.65:
                stripe_col = _lin(rng.choice([(60, 90, 160), (150, 60, 70), (80, 140, 100), (120, 120, 130)]))
                period = rng.uniform(14, 60) * u
                th = math.radians(ang)
                coord = xs * math.cos(th) + ys * math.sin(th) + folds * rng.uniform(3, 10) * u
                s = np.sin(coord * (2 * np.pi / period))
                duty = rng.uniform(0.3, 0.85)
                st = _smoothstep(duty - 0.08, duty + 0.08, s)
                a = _lerp3(a, stripe_col, st)
            weave = _streak_noise(rng, h, w, 6 * u, 1.2 * u, ang) * 0.5 + _streak_noise(rng, h, w, 6 * u, 1.2 * u, ang + 90) * 0.5
            a *= (1 + 0.04 * weave)[..., None]
            hgt += weave * 0.3 * u
        elif kind == "tiles":
            tile_cols = [(225, 225, 220), (190, 200, 205), (205, 190, 170), (120, 125, 130), (210, 225, 225)]
            col = _lin(np.array(tile_cols[rng.integers(len(tile_cols))]))
            size = rng.uniform(45, 110) * u
            # a plane seen in perspective: inverse homography from the image to the tile plane
            g = rng.uniform(-0.0012, 0.0012) / u
            hh = rng.uniform(0.0003, 0.0016) / u
            th = rng.uniform(0, np.pi)
            c, s = math.cos(th), math.sin(th)
            den = 1.0 + g * (xs - w / 2) + hh * (ys - h / 2)
            uu = (c * xs - s * ys) / den
            vv = (s * xs + c * ys) / den
            fu, fv = uu / size, vv / size
            iu, iv = np.floor(fu), np.floor(fv)
            du = np.minimum(fu - iu, 1 - (fu - iu)) * size
            dv = np.minimum(fv - iv, 1 - (fv - iv)) * size
            grout_w = rng.uniform(1.0, 2.5) * u
            grout = 1 - _smoothstep(grout_w * 0.5, grout_w * 1.3, np.minimum(du, dv) * den.clip(0.3))
            per_tile = np.sin(iu * 12.9898 + iv * 78.233) * 43758.5453
            per_tile = (per_tile - np.floor(per_tile)) - 0.5
            a[:] = col
            a *= (1 + 0.08 * per_tile + 0.03 * _fbm(rng, h, w, 30 * u))[..., None]
            a = _lerp3(a, _lin((110, 105, 95)), grout * 0.85)
            hgt -= grout * 1.5 * u
            ks, shin = 0.25, 60.0
        elif kind == "studio":
            c1 = _lin(rng.choice([(30, 40, 70), (20, 20, 22), (80, 85, 90), (160, 165, 170), (40, 70, 60)]))
            c2 = c1 * rng.uniform(1.5, 3.0)
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) / math.hypot(w, h)
            a = _lerp3(np.broadcast_to(c2, (h, w, 3)).astype(np.float32), c1, np.clip(r * 1.5, 0, 1))
            a *= (1 + 0.01 * _noise(rng, h, w, 3 * u))[..., None]
        elif kind == "drape":
            col = _lin(rng.choice([(70, 130, 170), (80, 150, 130), (60, 110, 150)]) + rng.normal(0, 6, 3))
            a[:] = col
            crinkle = _fbm(rng, h, w, 40 * u, octaves=5, gain=0.6)
            hgt += crinkle * rng.uniform(3, 8) * u
            a *= (1 + 0.03 * _noise(rng, h, w, 1.5 * u))[..., None]
            ks, shin = 0.06, 15.0
        self.albedo[:] = a
        self.height[:] = hgt
        self.ks[:] = ks
        self.shin[:] = shin
        if kind == "clutter":
            self._clutter()
        self.bg_kind = kind

    def _clutter(self):
        rng, h, w, u = self.rng, self.h, self.w, self.u
        cols = [(235, 235, 235), (40, 40, 45), (70, 110, 180), (190, 60, 50), (180, 140, 95), (160, 160, 165),
                (215, 175, 140), (90, 150, 90), (230, 200, 60)]
        for _ in range(rng.integers(3, 9)):
            m = np.zeros((h, w), np.uint8)
            c = np.array([rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h])
            if rng.random() < 0.3:  # a cable
                pts = _bezier([c + rng.normal(0, 200 * u, 2) for _ in range(4)], 40)
                cv2.polylines(m, [np.round(pts).astype(np.int32)], False, 1, int(rng.uniform(4, 12) * u))
            elif rng.random() < 0.5:
                size = rng.uniform(30, 120, 2) * u
                poly = _superellipse(size[0], size[1], rng.uniform(2, 8)) @ _rot(rng.uniform(0, np.pi)).T + c
                _fill(m, [poly])
            else:
                r = rng.uniform(15, 70) * u
                cv2.circle(m, (int(c[0]), int(c[1])), int(r), 1, -1)
            if not m.any():
                continue
            dt = cv2.distanceTransform(m, cv2.DIST_L2, 3)
            cap = rng.uniform(4, 25) * u
            d = np.minimum(dt, cap)
            dome = np.sqrt(np.maximum(2 * cap * d - d * d, 0))
            sel = m.astype(bool)
            col = _lin(np.array(cols[rng.integers(len(cols))]) + rng.normal(0, 10, 3))
            self.albedo[sel] = col * (1 + 0.03 * rng.standard_normal(np.count_nonzero(sel), dtype=np.float32))[:, None]
            self.height[sel] = dome[sel] + 30 * u
            self.ks[sel] = rng.uniform(0.05, 0.5)
            self.shin[sel] = rng.uniform(10, 80)

    # -- body ----------------------------------------------------------------------
    def body(self):
        rng, h, w, u = self.rng, self.h, self.w, self.u
        # a continuous tone between two neighbouring Fitzpatrick colours, with a brightness
        # and a small relative hue jitter (absolute jitter would skew the hue of dark skin)
        t = rng.uniform(0, 5)
        tone = int(round(t))
        lo = int(min(4, math.floor(t)))
        lin_tones = _lin(_SKIN_TONES)
        base = lin_tones[lo] + (lin_tones[lo + 1] - lin_tones[lo]) * (t - lo)
        base = (base * rng.uniform(0.9, 1.1) * np.exp(rng.normal(0, 0.04, 3))).astype(np.float32)
        self.tone, self.skin_base = tone, base
        kinds = ["limb", "torso", "hand", "foot", "face"]
        first = rng.choice(kinds, p=[0.3, 0.2, 0.22, 0.13, 0.15])
        parts = [first]
        if rng.random() < 0.35:
            parts.append(rng.choice(["limb", "hand", "foot"], p=[0.4, 0.4, 0.2]))
        specs, places = [], []
        for k in parts:
            if k == "limb":
                spec = _limb(rng, base)
                s = rng.uniform(0.25, 0.45) * min(w, h)
                ang = rng.uniform(0, np.pi)
            elif k == "torso":
                spec = _torso(rng, base, tone)
                s = rng.uniform(0.35, 0.6) * min(w, h)
                ang = rng.normal(0, 0.4)
            elif k == "hand":
                spec = _hand(rng, base, tone)
                s = rng.uniform(0.35, 0.6) * min(w, h)
                ang = rng.uniform(-np.pi, np.pi)
            elif k == "foot":
                spec = _foot(rng, base, tone)
                s = rng.uniform(0.35, 0.55) * min(w, h)
                ang = rng.uniform(-np.pi, np.pi)
            else:
                spec = _face(rng, base, tone)
                s = rng.uniform(0.25, 0.4) * min(w, h)
                ang = rng.normal(0, 0.3)
            centre = np.array([rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h])
            specs.append(spec)
            places.append([centre, s, ang])
        # scale all parts about their centres until the skin covers the share asked for
        target = rng.uniform(0.2, 0.66)
        k = 1.0
        for _ in range(3):
            union = np.zeros((h, w), np.uint8)
            for spec, (c, s, ang) in zip(specs, places):
                _fill(union, [p @ _rot(ang).T * (s * k) + c for p in spec["skin"]])
            share = union.mean()
            if share <= 0:
                k *= 1.5
                continue
            if abs(share - target) < 0.05:
                break
            k *= float(np.clip(math.sqrt(target / share), 0.6, 1.6))
        # melanin / redness variation shared by all parts of this person
        skin = np.empty((h, w, 3), np.float32)
        skin[:] = base
        skin *= np.exp(0.09 * _fbm(rng, h, w, 70 * u))[..., None]
        red = np.clip(_fbm(rng, h, w, 30 * u), 0, None) * rng.uniform(0.05, 0.2)
        skin = _lerp3(skin, base * np.array([1.08, 0.8, 0.82], np.float32), red)
        pores = _noise(rng, h, w, 1.3 * u) * 0.6 + _noise(rng, h, w, 3 * u) * 0.4
        skin *= (1 + 0.025 * pores)[..., None]
        skin_any = np.zeros((h, w), np.uint8)
        stack_h = 0.0
        for spec, (c, s, ang) in zip(specs, places):
            s = s * k
            rot = _rot(ang).T

            def place(p, rot=rot, s=s, c=c):
                return np.asarray(p) @ rot * s + c

            m = _fill(np.zeros((h, w), np.uint8), [place(p) for p in spec["skin"]])
            if not m.any():
                continue
            sel = m.astype(bool)
            dt = cv2.distanceTransform(m, cv2.DIST_L2, 5)
            cap = max(2.0, min(float(dt.max()), spec["dome"] * s))
            d = np.minimum(dt, cap)
            dome = np.sqrt(np.maximum(2 * cap * d - d * d, 0))
            gain = rng.uniform(0.92, 1.08) * np.array([1, rng.uniform(0.97, 1.03), rng.uniform(0.96, 1.04)], np.float32)
            self.albedo[sel] = skin[sel] * gain
            self.height[sel] = dome[sel] + stack_h + 40 * self.u
            stack_h += 0.5 * cap
            self.ks[sel] = rng.uniform(0.03, 0.1)
            self.shin[sel] = rng.uniform(10, 25)
            self.label[sel] = HEALTHY_SKIN
            skin_any |= m
            for x, y, sx, sy, amp in spec["bumps"]:
                cx, cy = place((x, y))
                sxp, syp = sx * s, sy * s
                self._gauss_bump(cx, cy, sxp, syp, ang, amp * s, sel)
            for poly, rgb, alpha, *soft in spec["tint"]:
                pts = place(poly)
                sigma = soft[0] * s / 2 if soft else 1.2 * u
                box = _box(pts, 3 * sigma + 2, h, w)
                if box is None:
                    continue
                (sy, sx), o = box
                tm = _fill(np.zeros((sy.stop - sy.start, sx.stop - sx.start), np.uint8), [pts - o]).astype(np.float32)
                tm = _blur(tm, sigma) * sel[sy, sx] * alpha
                col = np.asarray(rgb, np.float32) * (1 + 0.04 * pores[sy, sx, None])
                self.albedo[sy, sx] = _lerp3(self.albedo[sy, sx], col, tm)
            for pts, width, dark in spec["lines"]:
                pts = place(pts)
                box = _box(pts, width * s + 4 * u + 2, h, w)
                if box is None:
                    continue
                (sy, sx), o = box
                lm = np.zeros((sy.stop - sy.start, sx.stop - sx.start), np.float32)
                cv2.polylines(lm, [np.round((pts - o) * 16).astype(np.int32)], False, 1.0,
                              max(1, int(width * s)), cv2.LINE_AA, 4)
                lm = _blur(lm, 0.8 * u) * sel[sy, sx]
                self.albedo[sy, sx] *= (1 - dark * lm)[..., None]
                self.height[sy, sx] -= lm * 0.5 * u
            for poly, rgb, kind in spec["cut"]:
                pts = place(poly)
                box = _box(pts, 2, h, w)
                if box is None:
                    continue
                (sy, sx), o = box
                cm = _fill(np.zeros((sy.stop - sy.start, sx.stop - sx.start), np.uint8), [pts - o]).astype(bool)
                cm &= sel[sy, sx]
                if not cm.any():
                    continue
                n = np.count_nonzero(cm)
                tex = 1 + (0.25 if kind != "eye" else 0.03) * rng.standard_normal(n, dtype=np.float32)
                if kind == "hair":
                    strands = _streak_noise(rng, cm.shape[0], cm.shape[1], 40 * u, 1.5 * u, math.degrees(ang) + 90)
                    tex = 1 + 0.35 * strands[cm]
                    self.height[sy, sx][cm] += 6 * u
                self.albedo[sy, sx][cm] = np.asarray(rgb, np.float32) * tex[:, None]
                self.ks[sy, sx][cm] = 0.3 if kind == "eye" else 0.12
                self.shin[sy, sx][cm] = 80 if kind == "eye" else 20
                self.label[sy, sx][cm] = BACKGROUND
            if spec["hairy"] > 0.05 and tone < 5:
                self._body_hair(sel, ang + spec["hair_axis"], spec["hairy"])
        self.skin_mask = skin_any.astype(bool)
        # freckles / naevi
        ys_, xs_ = np.nonzero(self.label == HEALTHY_SKIN)
        if len(xs_):
            for i in rng.integers(0, len(xs_), rng.integers(0, 12)):
                r = rng.uniform(0.8, 3.0) * u
                cv2.circle(self.albedo, (int(xs_[i]), int(ys_[i])), max(1, int(r)),
                           tuple(float(v) for v in self.albedo[ys_[i], xs_[i]] * rng.uniform(0.45, 0.75)), -1, cv2.LINE_AA)

    def _gauss_bump(self, cx, cy, sx, sy, ang, amp, sel):
        h, w = self.h, self.w
        r = 3 * max(sx, sy)
        x0, x1 = int(max(0, cx - r)), int(min(w, cx + r + 1))
        y0, y1 = int(max(0, cy - r)), int(min(h, cy + r + 1))
        if x0 >= x1 or y0 >= y1:
            return
        xs, ys = _grid(h, w)
        dx, dy = xs[y0:y1, x0:x1] - cx, ys[y0:y1, x0:x1] - cy
        c, s = math.cos(ang), math.sin(ang)
        a = (c * dx + s * dy) / max(sx, 1e-3)
        b = (-s * dx + c * dy) / max(sy, 1e-3)
        self.height[y0:y1, x0:x1] += amp * np.exp(-0.5 * (a * a + b * b)) * sel[y0:y1, x0:x1]

    def _body_hair(self, sel, ang, density):
        rng, u = self.rng, self.u
        ys, xs = np.nonzero(sel)
        n = int(len(xs) / (350 * u * u) * density)
        if n == 0:
            return
        idx = rng.integers(0, len(xs), n)
        hair = np.zeros((self.h, self.w), np.float32)
        angs = ang + rng.normal(0, 0.35, n)
        lens = rng.uniform(4, 10, n) * u
        x0, y0 = xs[idx], ys[idx]
        x1 = x0 + np.cos(angs) * lens
        y1 = y0 + np.sin(angs) * lens
        for a0, b0, a1, b1 in zip(x0, y0, x1, y1):
            cv2.line(hair, (int(a0), int(b0)), (int(a1), int(b1)), 1.0, 1, cv2.LINE_AA)
        shade = 0.5 if self.tone < 2 and rng.random() < 0.5 else 0.75
        self.albedo *= (1 - shade * hair * sel)[..., None]

    # -- burns -----------------------------------------------------------------------
    def burns(self):
        rng, h, w, u = self.rng, self.h, self.w, self.u
        skin = self.label == HEALTHY_SKIN
        n_skin = int(np.count_nonzero(skin))
        if n_skin < 500 or rng.random() < _NO_BURN_SHARE:
            return
        share = float(np.exp(rng.uniform(np.log(0.035), np.log(0.3))))
        n_target = int(min(share * h * w, 0.7 * n_skin))
        dt = cv2.distanceTransform(skin.astype(np.uint8), cv2.DIST_L2, 3)
        inner = dt > 0.35 * dt.max()
        iy, ix = np.nonzero(inner)
        mech = rng.choice(["flame", "scald", "contact"], p=[0.45, 0.33, 0.22])
        n_sites = 1 if rng.random() < 0.75 else 2
        field = np.zeros((h, w), np.float32)
        for site in range(n_sites):
            j = rng.integers(len(ix))
            centre = np.array([ix[j], iy[j]], float)
            n_here = n_target / n_sites
            if mech == "flame":
                f = self._flame(centre, n_here)
            elif mech == "scald":
                f = self._scald(centre, n_here)
            else:
                f = self._contact(centre, n_here)
            field = np.maximum(field, f * (1.0 if site == 0 else rng.uniform(0.8, 1.0)))
        vals = field[skin]
        floor = 0.2 if mech == "contact" else 0.06
        thr = max(floor, float(np.quantile(vals[:: max(1, len(vals) // 40000)], 1 - n_target / n_skin)))
        burn = skin & (field > thr)
        n_burn = int(np.count_nonzero(burn))
        if n_burn < 50:
            return
        # severity: mostly the field itself (deepest in the middle), sometimes patchy or a mosaic
        sev = (field - thr) / (float(field[burn].max()) - thr + 1e-6)
        mode = rng.random()
        if mode < 0.6:
            mix = rng.uniform(0.0, 0.15)
        elif mode < 0.9:
            mix = rng.uniform(0.3, 0.6)
        else:
            mix = 1.0
        if mix > 0:
            other = _fbm(rng, h, w, rng.uniform(15, 60) * u, octaves=3)
            other = (other - other.min()) / (other.max() - other.min() + 1e-6)
            sev = (1 - mix) * sev + mix * other
        p_deep = {"flame": [0.08, 0.2, 0.3, 0.42], "scald": [0.2, 0.4, 0.28, 0.12],
                  "contact": [0.05, 0.15, 0.3, 0.5]}[mech]
        deepest = int(rng.choice([2, 3, 4, 5], p=p_deep))
        k = int(rng.integers(1, deepest))  # 1 .. deepest-1 zones
        classes = list(range(deepest - k + 1, deepest + 1))
        if len(classes) >= 3 and rng.random() < 0.2:
            classes.pop(int(rng.integers(1, len(classes) - 1)))
        shares = rng.dirichlet(np.full(len(classes), 2.0))
        if mech == "contact" and len(classes) > 1:
            shares[0] *= 0.4
            shares /= shares.sum()
        sv = sev[burn]
        cuts = np.quantile(sv, np.cumsum(shares)[:-1]) if len(classes) > 1 else []
        zone = np.searchsorted(np.asarray(cuts), sv)
        lab = np.asarray(classes, np.uint8)[zone]
        if rng.random() < 0.12 and len(classes) > 1:  # reversed: deeper rim, shallower centre
            lab = np.asarray(classes[::-1], np.uint8)[zone]
        self.label[burn] = lab
        self.mech = mech

    def _lowres_canvas(self):
        return np.zeros((self.h // 4 + 1, self.w // 4 + 1), np.float32)

    def _upsample(self, small, sigma_small):
        small = _blur(small, sigma_small)
        return cv2.resize(small, (self.w, self.h), interpolation=cv2.INTER_LINEAR)

    def _flame(self, centre, n_px):
        rng = self.rng
        radius = math.sqrt(n_px / math.pi)
        canvas = self._lowres_canvas()
        dirn = rng.uniform(0, np.pi)
        elong = rng.uniform(1.0, 2.5)
        for _ in range(rng.integers(3, 14)):
            t = rng.normal(0, 0.55, 2) * radius * np.array([elong, 1 / elong])
            off = _rot(dirn) @ t
            c = (centre + off) / 4
            ax = rng.uniform(0.25, 0.7, 2) * radius / 4
            tmp = np.zeros_like(canvas)
            cv2.ellipse(tmp, (int(c[0]), int(c[1])), (max(1, int(ax[0])), max(1, int(ax[1]))),
                        rng.uniform(0, 180), 0, 360, 1.0, -1)
            canvas += tmp * rng.uniform(0.6, 1.0)
        f = self._upsample(canvas, radius / 4 * 0.35)
        f /= f.max() + 1e-6
        # ragged edges: noise only where the blobs reach, so no specks far from the wound
        f += 0.25 * _fbm(rng, self.h, self.w, max(6.0, radius * 0.25), octaves=4, gain=0.6) * np.minimum(f * 4, 1)
        return f

    def _scald(self, centre, n_px):
        rng = self.rng
        radius = math.sqrt(n_px / math.pi) * 0.75
        canvas = self._lowres_canvas()
        c4 = centre / 4
        r4 = radius / 4
        cv2.ellipse(canvas, (int(c4[0]), int(c4[1])), (max(1, int(r4 * rng.uniform(0.7, 1.2))), max(1, int(r4 * rng.uniform(0.5, 0.9)))),
                    rng.uniform(0, 180), 0, 360, 1.0, -1)
        g = math.radians(90 + rng.normal(0, 25))  # gravity: mostly down the image
        gv = np.array([math.cos(g), math.sin(g)])
        for _ in range(rng.integers(2, 8)):
            start = c4 + _rot(rng.uniform(-1.2, 1.2)) @ gv * r4 * rng.uniform(0.4, 0.9)
            length = r4 * rng.uniform(1.0, 3.5)
            width = r4 * rng.uniform(0.15, 0.45)
            p = start.copy()
            steps = 10
            for i in range(steps):
                wob = rng.normal(0, 0.25)
                q = p + _rot(wob) @ gv * length / steps
                th = max(1, int(width * (1 - i / steps * 0.8)))
                cv2.line(canvas, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), 0.85, th)
                p = q
            if rng.random() < 0.6:  # drop at the end of the drip
                cv2.circle(canvas, (int(p[0]), int(p[1])), max(1, int(width * 0.6)), 0.85, -1)
        for _ in range(rng.integers(0, 12)):  # satellite droplets from the splash
            d = _rot(rng.uniform(0, 2 * np.pi)) @ np.array([1.0, 0]) * r4 * rng.uniform(1.1, 2.0)
            cv2.circle(canvas, (int(c4[0] + d[0]), int(c4[1] + d[1])), max(1, int(r4 * rng.uniform(0.04, 0.15))), 0.7, -1)
        f = self._upsample(canvas, max(0.6, r4 * 0.08))
        f += 0.1 * _fbm(rng, self.h, self.w, max(4.0, radius * 0.15), octaves=3) * np.minimum(f * 4, 1)
        # splash centre hottest
        xs, ys = _grid(self.h, self.w)
        dist = np.sqrt((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (radius * 2.5)
        return f * (1.0 - 0.5 * np.clip(dist, 0, 1))

    def _contact(self, centre, n_px):
        rng, u, h, w = self.rng, self.u, self.h, self.w
        shape = rng.choice(["disc", "ring", "grill", "plate", "iron"])
        ang = rng.uniform(0, np.pi)
        area = n_px * 0.8
        m = np.zeros((h, w), np.uint8)
        if shape == "disc":
            r = math.sqrt(area / math.pi)
            _fill(m, [_superellipse(r, r * rng.uniform(0.7, 1.0), 2) @ _rot(ang).T + centre])
        elif shape == "ring":
            ratio = rng.uniform(0.55, 0.8)
            r = math.sqrt(area / (math.pi * (1 - ratio**2)))
            cv2.circle(m, (int(centre[0]), int(centre[1])), int(r), 1, -1)
            cv2.circle(m, (int(centre[0]), int(centre[1])), int(r * ratio), 0, -1)
        elif shape == "grill":
            bars = int(rng.integers(2, 5))
            bw = math.sqrt(area / bars / rng.uniform(4, 8))
            bl = area / bars / bw
            gap = bw * rng.uniform(1.0, 2.0)
            for b in range(bars):
                off = (b - (bars - 1) / 2) * (bw + gap)
                rect = np.array([(-bl / 2, off - bw / 2), (bl / 2, off - bw / 2), (bl / 2, off + bw / 2), (-bl / 2, off + bw / 2)])
                _fill(m, [rect @ _rot(ang).T + centre])
        elif shape == "plate":
            ar = rng.uniform(1.0, 2.0)
            a = math.sqrt(area * ar) / 2
            _fill(m, [_superellipse(a, a / ar, rng.uniform(4, 10)) @ _rot(ang).T + centre])
        else:
            L = math.sqrt(area * 2.4)
            W = area * 2 / L
            tri = np.array([(L * 0.55, 0), (-L * 0.45, -W / 2), (-L * 0.45, W / 2)])
            _fill(m, [tri @ _rot(ang).T + centre])
        f = _blur(m.astype(np.float32), max(1.5, rng.uniform(2, 8) * u))
        f += 0.08 * _fbm(rng, h, w, 25 * u, octaves=3) * np.minimum(f * 4, 1)
        return f

    # -- burn appearance -----------------------------------------------------------
    def paint_burns(self):
        rng, u = self.rng, self.u
        lab = self.label
        burn = lab >= SUPERFICIAL
        if not burn.any():
            return
        skin = self.albedo.copy()
        tone_light = 1 - self.tone / 5.0
        # hyperaemia bleeding a little past the labelled edge into healthy skin
        halo = _blur(burn.astype(np.float32), rng.uniform(4, 12) * u) * (lab == HEALTHY_SKIN)
        self.albedo = _lerp3(self.albedo, self.albedo * np.array([1.12, 0.82, 0.82], np.float32), halo * rng.uniform(0.2, 0.6))
        swell = _blur(burn.astype(np.float32), 6 * u) * rng.uniform(1, 4) * u
        self.height += swell
        order = [SUPERFICIAL, SUPERFICIAL_PARTIAL, DEEP_PARTIAL, FULL_THICKNESS]
        for c in order:
            m = lab == c
            if not m.any():
                continue
            wgt = _blur(m.astype(np.float32), rng.uniform(0.6, 1.6) * u)
            if c == SUPERFICIAL:
                alb, hgt, ks, shin = self._superficial(skin, m, tone_light)
            elif c == SUPERFICIAL_PARTIAL:
                alb, hgt, ks, shin = self._sup_partial(skin, m, tone_light)
            elif c == DEEP_PARTIAL:
                alb, hgt, ks, shin = self._deep_partial(skin, m, tone_light)
            else:
                alb, hgt, ks, shin = self._full(skin, m, tone_light)
            self.albedo = _lerp3(self.albedo, alb, wgt)
            self.height += hgt * wgt
            self.ks += (ks - self.ks) * wgt
            self.shin += (shin - self.shin) * wgt

    def _superficial(self, skin, m, tl):
        rng, h, w, u = self.rng, self.h, self.w, self.u
        # erythema: redder and darker; on dark skin subtler, more violaceous-brown than red
        red = skin * np.array([1.3, 0.55, 0.55], np.float32) + np.array([0.02 + 0.05 * tl, 0.0, 0.004], np.float32)
        blot = _smoothstep(-1.5, 1.2, _fbm(rng, h, w, 18 * u, octaves=3))
        alb = _lerp3(skin, red, rng.uniform(0.55, 0.9) * (0.6 + 0.4 * blot))
        hgt = 0.3 * u * _noise(rng, h, w, 2 * u)
        if rng.random() < 0.3:  # a few blanched pale spots
            pale = _smoothstep(1.4, 2.0, _fbm(rng, h, w, 10 * u, octaves=2))
            alb = _lerp3(alb, skin * 1.05, pale * 0.7)
        if rng.random() < 0.25:  # dry fine scaling of the epidermis
            flake = _smoothstep(1.2, 1.8, _noise(rng, h, w, 1.8 * u))
            alb = _lerp3(alb, alb * 0.6 + 0.4 * _lin((235, 225, 215)), flake * 0.5)
            hgt = hgt + flake * 0.6 * u
        return alb, hgt, 0.04, 10.0

    def _sup_partial(self, skin, m, tl):
        rng, h, w, u = self.rng, self.h, self.w, self.u
        wet = _lin(np.array([228, 112, 112]) + rng.normal(0, 12, 3))
        base = _lerp3(np.broadcast_to(wet, (h, w, 3)).astype(np.float32), skin * np.array([1.2, 0.6, 0.6], np.float32),
                      np.full((h, w), rng.uniform(0.0, 0.35), np.float32))
        base *= (1 + 0.12 * _fbm(rng, h, w, 12 * u, octaves=3))[..., None]
        hgt = 0.4 * u * _noise(rng, h, w, 1.5 * u)
        # blisters: Voronoi cells of seeds inside the zone
        ys, xs = np.nonzero(m)
        r_typ = rng.uniform(6, 30) * u
        n = int(np.clip(len(xs) / (math.pi * r_typ**2) * rng.uniform(0.6, 1.4), 1, 400))
        seeds = np.ones((h, w), np.uint8)
        idx = rng.integers(0, len(xs), n)
        seeds[ys[idx], xs[idx]] = 0
        dist, labels = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        nl = int(labels.max()) + 1
        radius = (r_typ * rng.uniform(0.45, 1.1, nl)).astype(np.float32)
        p_blister = rng.uniform(0.3, 0.85)
        intact = (rng.random(nl) < p_blister).astype(np.float32)
        rl = radius[labels]
        inside = np.clip(1 - (dist / np.maximum(rl, 1)) ** 2, 0, None) * intact[labels] * m
        dome = np.sqrt(inside) * rl * rng.uniform(0.25, 0.6)
        roof = _lin(255 * np.clip(skin, 0, 1) ** (1 / 2.2) * 0.45 + np.array([236, 218, 180], np.float32) * 0.55)
        fluid = np.minimum(inside * 3, 1)
        alb = _lerp3(base, roof, fluid * rng.uniform(0.5, 0.85))
        rim = (np.abs(dist - rl) < 1.4 * u) & (intact[labels] > 0) & m
        alb[rim] = alb[rim] * 0.5 + _lin((235, 230, 220)) * 0.5
        # shreds of sloughed epidermis at the zone's rim
        edge = m & (cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, int(3 * u))) == 0)
        shred = edge & (_noise(rng, h, w, 4 * u) > 0.3)
        alb[shred] = alb[shred] * 0.3 + _lin((225, 220, 205)) * 0.7
        hgt = hgt + dome
        return alb, hgt, rng.uniform(0.4, 0.9), rng.uniform(40, 140)

    def _deep_partial(self, skin, m, tl):
        rng, h, w, u = self.rng, self.h, self.w, self.u
        variant = rng.choice(["mottled", "cherry", "pale"], p=[0.5, 0.25, 0.25])
        pink = _lin(np.array([220, 125, 120]) + rng.normal(0, 12, 3))
        white = _lin(np.array([232, 218, 205]) + rng.normal(0, 8, 3))
        if variant == "cherry":  # fixed capillary staining: deep red with pale islands
            pink = _lin(np.array([178, 52, 60]) + rng.normal(0, 10, 3))
            lo, hi = 0.3, 1.1
        elif variant == "pale":  # mostly white dermis, pink speckle
            lo, hi = -1.1, -0.2
        else:
            lo, hi = -0.4, 0.5
        cell = rng.uniform(4, 18) * u
        mott = _smoothstep(lo, hi, _fbm(rng, h, w, cell, octaves=4, gain=rng.uniform(0.45, 0.7)))
        alb = _lerp3(np.broadcast_to(pink, (h, w, 3)).astype(np.float32), white, mott * rng.uniform(0.6, 0.95))
        dots = _smoothstep(2.0, 2.6, _noise(rng, h, w, 2.2 * u)) * rng.uniform(0.5, 1.0)
        alb = _lerp3(alb, _lin((150, 35, 45)), dots)
        if rng.random() < 0.4:  # some residual darker pigment on dark skin
            alb = _lerp3(alb, skin, _smoothstep(0.8, 1.6, _fbm(rng, h, w, 20 * u, octaves=2)) * 0.5)
        return alb, 0.5 * u * _noise(rng, h, w, 2 * u), rng.uniform(0.08, 0.25), 25.0

    def _full(self, skin, m, tl):
        rng, h, w, u = self.rng, self.h, self.w, self.u
        kind = rng.choice(["waxy", "leather", "char", "mixed"], p=[0.25, 0.25, 0.25, 0.25])
        waxy = _lin(np.array([236, 230, 212]) + rng.normal(0, 8, 3))
        leather = _lin(np.array([168, 118, 72]) + rng.normal(0, 15, 3))
        char = _lin(np.array([34, 28, 24]) + rng.normal(0, 5, 3))
        pick = {"waxy": waxy, "leather": leather, "char": char}
        if kind == "mixed":
            a, b = rng.choice(["waxy", "leather", "char"], 2, replace=False)
            t = _smoothstep(-0.3, 0.3, _fbm(rng, h, w, 25 * u, octaves=3))
            alb = _lerp3(np.broadcast_to(pick[a], (h, w, 3)).astype(np.float32), pick[b], t)
        else:
            alb = np.empty((h, w, 3), np.float32)
            alb[:] = pick[kind]
        alb *= (1 + 0.15 * _fbm(rng, h, w, 8 * u, octaves=3))[..., None]
        wrinkle = _streak_noise(rng, h, w, 14 * u, 2 * u, rng.uniform(0, 180))
        hgt = 0.8 * u * wrinkle + 0.3 * u * _noise(rng, h, w, 1.3 * u)
        if kind in ("char", "mixed"):
            speck = _noise(rng, h, w, 1.4 * u)
            ash = speck > 1.6
            alb[ash] = _lin((120, 115, 110))
            soot = speck < -1.8
            alb[soot] *= 0.4
            hgt += 1.2 * u * _noise(rng, h, w, 3 * u)
        # eschar cracks along Voronoi edges with red or dark wound bed beneath
        if rng.random() < 0.6:
            ys, xs = np.nonzero(m)
            cell = rng.uniform(14, 40) * u
            n = int(np.clip(len(xs) / cell**2, 2, 300))
            seeds = np.ones((h, w), np.uint8)
            idx = rng.integers(0, len(xs), n)
            seeds[ys[idx], xs[idx]] = 0
            _, labels = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
            edge = np.zeros((h, w), bool)
            edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
            edge[1:, :] |= labels[1:, :] != labels[:-1, :]
            edge &= _noise(rng, h, w, 12 * u) > -0.3
            crack = _lin(rng.choice([(120, 25, 30), (40, 15, 15)]))
            alb[edge] = crack
            hgt[edge] -= 1.5 * u
        # thrombosed vessels seen through the eschar
        if kind != "char" and rng.random() < 0.6:
            ves = np.zeros((h, w), np.float32)
            ys, xs = np.nonzero(m)
            for _ in range(rng.integers(2, 7)):
                j = rng.integers(len(xs))
                p = np.array([xs[j], ys[j]], float)
                a = rng.uniform(0, 2 * np.pi)
                for _ in range(rng.integers(5, 20)):
                    a += rng.normal(0, 0.5)
                    q = p + np.array([math.cos(a), math.sin(a)]) * rng.uniform(4, 10) * u
                    cv2.line(ves, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), 1.0, max(1, int(1.5 * u)), cv2.LINE_AA)
                    p = q
            alb = _lerp3(alb, _lin((70, 30, 45)), ves * 0.8)
        ks = {"waxy": 0.2, "leather": 0.04, "char": 0.03, "mixed": 0.05}[kind]
        shin = {"waxy": 30.0, "leather": 8.0, "char": 6.0, "mixed": 8.0}[kind]
        return alb, hgt, ks, shin

    # -- occluders -------------------------------------------------------------------
    def occluders(self):
        rng, h, w, u = self.rng, self.h, self.w, self.u
        if rng.random() > 0.35:
            return
        top = float(self.height.max()) + 20 * u
        for _ in range(rng.integers(1, 3)):
            kind = rng.choice(["ruler", "gauze", "glove", "electrode"], p=[0.35, 0.25, 0.25, 0.15])
            m = np.zeros((h, w), np.uint8)
            c = np.array([rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h])
            ang = rng.uniform(0, np.pi)
            if kind == "ruler":
                L, W = rng.uniform(0.4, 1.0) * w, rng.uniform(22, 40) * u
                rect = np.array([(-L / 2, -W / 2), (L / 2, -W / 2), (L / 2, W / 2), (-L / 2, W / 2)]) @ _rot(ang).T + c
                _fill(m, [rect])
                sel = m.astype(bool)
                col = _lin(rng.choice([(240, 240, 235), (245, 225, 120), (230, 235, 240)]))
                self.albedo[sel] = col
                along = np.array([math.cos(ang), math.sin(ang)])
                perp = np.array([-along[1], along[0]])
                step = rng.uniform(4, 7) * u
                for i in range(int(L / step)):
                    p = c - along * L / 2 + along * (i + 0.5) * step - perp * W / 2
                    tl = W * (0.45 if i % 10 == 0 else 0.3 if i % 5 == 0 else 0.18)
                    q = p + perp * tl
                    cv2.line(self.albedo, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), (0.01, 0.01, 0.01), 1, cv2.LINE_AA)
                self.height[sel] = top
                self.ks[sel], self.shin[sel] = 0.3, 50
            elif kind == "gauze":
                size = rng.uniform(40, 120, 2) * u
                _fill(m, [_superellipse(size[0], size[1], rng.uniform(3, 8), rng, 0.05) @ _rot(ang).T + c])
                sel = m.astype(bool)
                weave = _streak_noise(rng, h, w, 8 * u, 1.5 * u, math.degrees(ang)) + _streak_noise(rng, h, w, 8 * u, 1.5 * u, math.degrees(ang) + 90)
                gz = np.empty((h, w, 3), np.float32)
                gz[:] = _lin((238, 236, 230))
                gz *= (1 + 0.08 * weave)[..., None]
                if rng.random() < 0.5:  # ointment stain
                    st = _smoothstep(0.3, 1.0, _fbm(rng, h, w, 30 * u, octaves=2))
                    gz = _lerp3(gz, _lin((225, 200, 120)), st * 0.6)
                self.albedo[sel] = gz[sel]
                dt = cv2.distanceTransform(m, cv2.DIST_L2, 3)
                self.height[sel] = top + np.minimum(dt[sel], 8 * u) + weave[sel] * u
                self.ks[sel], self.shin[sel] = 0.02, 6
            elif kind == "glove":
                col = _lin(rng.choice([(90, 120, 210), (120, 90, 170), (235, 235, 230), (40, 40, 50)]))
                edge_pt = np.array([rng.choice([-0.1, 1.1]) * w, rng.uniform(0, 1) * h]) if rng.random() < 0.5 else \
                    np.array([rng.uniform(0, 1) * w, rng.choice([-0.1, 1.1]) * h])
                for f in range(rng.integers(1, 4)):
                    tip = c + rng.normal(0, 25 * u, 2) + f * 30 * u
                    _fill(m, [_capsule(edge_pt, tip, 28 * u, 20 * u)])
                sel = m.astype(bool)
                dt = cv2.distanceTransform(m, cv2.DIST_L2, 3)
                cap = 22 * u
                d = np.minimum(dt, cap)
                self.albedo[sel] = col
                self.height[sel] = top + np.sqrt(np.maximum(2 * cap * d - d * d, 0))[sel]
                self.ks[sel], self.shin[sel] = 0.35, 40
            else:
                r = rng.uniform(18, 30) * u
                cv2.circle(m, (int(c[0]), int(c[1])), int(r), 1, -1)
                sel = m.astype(bool)
                self.albedo[sel] = _lin((240, 240, 238))
                inner = np.zeros((h, w), np.uint8)
                cv2.circle(inner, (int(c[0]), int(c[1])), int(r * 0.35), 1, -1)
                self.albedo[inner.astype(bool)] = _lin((150, 150, 150))
                self.height[sel] = top + 2 * u
                self.ks[sel], self.shin[sel] = 0.1, 20
            self.label[m.astype(bool)] = BACKGROUND
            self.occ = getattr(self, "occ", np.zeros((h, w), bool)) | m.astype(bool)

    # -- light and camera --------------------------------------------------------------
    def shade(self):
        rng, h, w, u = self.rng, self.h, self.w, self.u
        az = rng.uniform(0, 2 * np.pi)
        el = rng.uniform(np.radians(25), np.radians(80))
        L = np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)], np.float32)
        fill_az = az + np.pi + rng.normal(0, 0.5)
        F = np.array([math.cos(fill_az) * 0.5, math.sin(fill_az) * 0.5, 0.85], np.float32)
        F /= np.linalg.norm(F)
        Hv = L + np.array([0, 0, 1], np.float32)
        Hv /= np.linalg.norm(Hv)
        gx = cv2.Sobel(self.height, cv2.CV_32F, 1, 0, ksize=3) / 8
        gy = cv2.Sobel(self.height, cv2.CV_32F, 0, 1, ksize=3) / 8
        inv = 1.0 / np.sqrt(gx * gx + gy * gy + 1)
        ndl = np.clip((-gx * L[0] - gy * L[1] + L[2]) * inv, 0, None)
        ndf = np.clip((-gx * F[0] - gy * F[1] + F[2]) * inv, 0, None)
        ndh = np.clip((-gx * Hv[0] - gy * Hv[1] + Hv[2]) * inv, 0, None)
        # cast shadow of everything raised onto what lies below it
        raised = np.clip(self.height / (40 * u), 0, 1.5)
        reach = 25 * u * (1.0 / max(math.tan(el), 0.3))
        planar = max(1e-3, math.hypot(L[0], L[1]))
        # shadows fall away from the light: shift the casters by -L_xy
        M = np.float32([[1, 0, -L[0] / planar * reach], [0, 1, -L[1] / planar * reach]])
        caster = cv2.warpAffine(raised, M, (w, h), borderMode=cv2.BORDER_REPLICATE)
        shadow = np.clip(caster - raised, 0, 1)
        shadow = _blur(shadow, rng.uniform(4, 14) * u)
        shadow = 1 - rng.uniform(0.3, 0.75) * np.clip(shadow, 0, 1)
        key = rng.uniform(0.6, 1.0)
        fill = rng.uniform(0.1, 0.35)
        amb = rng.uniform(0.08, 0.25)
        # uneven light over the frame (a spot lamp)
        xs, ys = _grid(h, w)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        fall = 1 - rng.uniform(0, 0.35) * np.clip(np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) / math.hypot(w, h), 0, 1)
        direct = key * ndl * shadow * fall
        shading = amb + direct + fill * ndf
        # light scattered beneath skin softens the shading, most in red
        skinish = (self.label >= HEALTHY_SKIN).astype(np.float32)
        sr = _blur(shading, 2.5 * u)
        sg = _blur(shading, 1.2 * u)
        sh3 = np.stack([shading + (sr - shading) * skinish, shading + (sg - shading) * skinish, shading], -1)
        temp = rng.uniform(-1, 1)  # warm (+) or cool (-) cast left after white balance
        light = np.array([1 + 0.12 * temp, 1.0, 1 - 0.15 * temp], np.float32) * rng.uniform(0.97, 1.03, 3).astype(np.float32)
        spec = self.ks * np.power(ndh, self.shin) * key * shadow * (self.shin + 8) / 40
        rad = (self.albedo * sh3 + spec[..., None]) * light
        # flash: a frontal specular glint on wet surfaces
        if rng.random() < 0.4:
            fl = self.ks * np.power(inv, self.shin * 2) * rng.uniform(0.3, 0.8)
            rad += fl[..., None]
        self.white_level = float((amb + key + fill) * light.mean())  # what a lit white card reflects
        return rad

    def camera(self, rad):
        rng, h, w, u = self.rng, self.h, self.w, self.u
        xs, ys = _grid(h, w)
        lum = rad @ np.array([0.2126, 0.7152, 0.0722], np.float32)
        cw = np.exp(-(((xs - w / 2) / (0.35 * w)) ** 2 + ((ys - h / 2) / (0.35 * h)) ** 2))
        meter = 0.5 * float(lum.mean()) + 0.5 * float((lum * cw).sum() / cw.sum())
        ev = rng.normal(0, 0.35)
        # auto-exposure, held within about +-1 stop of what a white card would need, so dark
        # skin on a dark background stays dark
        nominal = 0.85 / max(self.white_level, 1e-4)
        gain = float(np.clip(0.3 / max(meter, 1e-4), nominal * 0.6, nominal * 1.8))
        rad = rad * (gain * 2.0**ev)
        r2 = ((xs - w / 2) ** 2 + (ys - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
        rad *= (1 - rng.uniform(0.05, 0.4) * r2)[..., None]
        # sensor noise: shot + read, some chroma blotches
        shot, read = rng.uniform(0.0003, 0.003), rng.uniform(0.001, 0.006)
        sigma = np.sqrt(np.clip(rad, 0, None) * shot + read * read)
        rad = rad + sigma * rng.standard_normal((h, w, 3), dtype=np.float32)
        if rng.random() < 0.5:
            rad += np.stack([_noise(rng, h, w, 4 * u) for _ in range(3)], -1) * read * 0.8
        idx = np.sqrt(np.clip(np.nan_to_num(rad), 0, 4.0) / 4.0) * 4095
        img = _tone_lut()[idx.astype(np.uint16)]
        r = rng.random()
        if r < 0.55:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.4) * u)
        elif r < 0.7:
            n = int(rng.integers(3, 9) * u) | 1
            k = np.zeros((n, n), np.float32)
            k[n // 2] = 1.0 / n
            k = cv2.warpAffine(k, cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), rng.uniform(0, 180), 1.0), (n, n))
            img = cv2.filter2D(img, -1, k / max(k.sum(), 1e-6))
        if rng.random() < 0.75:
            q = int(rng.integers(35, 95))
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok:
                img = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return np.ascontiguousarray(img, dtype=np.uint8)

    def render(self):
        self.background()
        self.body()
        self.burns()
        self.paint_burns()
        self.occluders()
        rad = self.shade()
        frame = self.camera(rad)
        return frame, self.label.copy()


def independent_frames(count: int, seed: int, size=(640, 480)) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` (frame, mask) pairs from the held-out scene family.

    frame: RGB uint8 (H, W, 3); mask: uint8 (H, W) of class indices 0..5; size is
    (width, height). Deterministic in `seed`; frame i depends only on (seed, i), so a
    longer list starts with the frames of a shorter one. Each frame is its own scene.
    For measuring generalisation only: never train on these.
    """
    w, h = int(size[0]), int(size[1])
    if w < 16 or h < 16:
        raise ValueError(f"size too small: {size}")
    root = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x1D3E9])
    out = []
    for child in root.spawn(int(count)):
        scene = _Scene(np.random.default_rng(child), w, h)
        out.append(scene.render())
    return out
