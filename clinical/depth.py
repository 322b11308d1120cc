"""Burn-depth classes: the model's output classes, in the order of CLINICAL.md.

A class mask is an (H, W) uint8 array of these indices.
"""
from __future__ import annotations

import numpy as np

BACKGROUND = 0
HEALTHY_SKIN = 1
SUPERFICIAL = 2
SUPERFICIAL_PARTIAL = 3
DEEP_PARTIAL = 4
FULL_THICKNESS = 5

CLASS_NAMES: tuple[str, ...] = (
    "background",
    "healthy_skin",
    "superficial",
    "superficial_partial",
    "deep_partial",
    "full_thickness",
)
NUM_CLASSES = len(CLASS_NAMES)

#: every burn depth (classes 2-5): "any burn"
BURN_CLASSES: tuple[int, ...] = (SUPERFICIAL, SUPERFICIAL_PARTIAL, DEEP_PARTIAL, FULL_THICKNESS)
#: classes counted in %TBSA: partial and full thickness; superficial burn is left out
TBSA_CLASSES: tuple[int, ...] = (SUPERFICIAL_PARTIAL, DEEP_PARTIAL, FULL_THICKNESS)
#: visible skin: healthy or burned
SKIN_CLASSES: tuple[int, ...] = (HEALTHY_SKIN, *BURN_CLASSES)

#: overlay colours, RGB uint8, one row per class; background and healthy skin are not tinted
CLASS_COLOURS_RGB = np.array(
    [
        (0, 0, 0),  # background
        (0, 0, 0),  # healthy skin
        (255, 214, 0),  # superficial: yellow
        (255, 128, 0),  # superficial partial: orange
        (230, 20, 60),  # deep partial: red
        (140, 0, 200),  # full thickness: purple
    ],
    dtype=np.uint8,
)
#: which classes the overlay tints
TINTED = np.array([False, False, True, True, True, True])

LABELS: dict[str, str] = {
    "background": "background",
    "healthy_skin": "healthy skin",
    "superficial": "superficial (1st)",
    "superficial_partial": "superficial partial",
    "deep_partial": "deep partial",
    "full_thickness": "full thickness (3rd)",
}
