"""Burn size from a class mask: pixels per depth, burned share of visible skin, %TBSA estimate.

%TBSA counts partial- and full-thickness burn only; superficial (first-degree) burn is left out,
as clinicians do. From one camera view the estimate is: the share of the region's visible skin
that is partial/full-thickness burn, times the region's %TBSA (rule of nines, or Lund-Browder
for children). This is decision support, never a diagnosis.
"""
from __future__ import annotations

from holoburn.clinical.depth import BURN_CLASSES, CLASS_NAMES, NUM_CLASSES, SKIN_CLASSES, TBSA_CLASSES

#: adult rule of nines, %TBSA per body region
RULE_OF_NINES = {
    "head": 9.0,
    "left_arm": 9.0,
    "right_arm": 9.0,
    "left_leg": 18.0,
    "right_leg": 18.0,
    "anterior_trunk": 18.0,
    "posterior_trunk": 18.0,
    "perineum": 1.0,
}
#: regions whose burn alone meets burn-centre referral criteria (ABA); names as in configs
SPECIAL_REGIONS = frozenset({"head", "face", "hand", "left_hand", "right_hand", "foot", "left_foot",
                             "right_foot", "perineum", "genitalia", "major_joint"})


#: Lund-Browder chart (whole region, front + back) at ages 0, 1, 5, 10, 15 and adult, %TBSA
LUND_BROWDER_AGES = (0.0, 1.0, 5.0, 10.0, 15.0, 18.0)
LUND_BROWDER = {
    "head": (19.0, 17.0, 13.0, 11.0, 9.0, 7.0),
    "leg": (14.0, 15.0, 17.0, 18.5, 19.0, 20.0),  # thigh + lower leg + foot, one side
}


def region_tbsa_pct(region: str, age_years: float | None = None) -> float:
    """%TBSA of a named body region.

    Without an age: the adult rule of nines. With an age: head and legs follow the Lund-Browder
    chart (linear between its ages), since a child's head is a larger share; other regions keep
    the rule of nines.
    """
    if region not in RULE_OF_NINES:
        raise ValueError(f"unknown body region {region!r}; known: {', '.join(sorted(RULE_OF_NINES))}")
    if age_years is None:
        return RULE_OF_NINES[region]
    if not 0 <= age_years <= 130:
        raise ValueError(f"age must be between 0 and 130 years, got {age_years}")
    chart = LUND_BROWDER.get("leg" if region.endswith("_leg") else region)
    if chart is None:
        return RULE_OF_NINES[region]
    ages = LUND_BROWDER_AGES
    if age_years >= ages[-1]:
        return chart[-1]
    i = max(k for k in range(len(ages)) if ages[k] <= age_years)
    t = (age_years - ages[i]) / (ages[i + 1] - ages[i])
    return chart[i] + t * (chart[i + 1] - chart[i])


def count_pixels(mask) -> list[int]:
    """Pixels of each class in an (H, W) class mask (NumPy or CuPy)."""
    flat = mask.ravel()
    if type(flat).__module__.startswith("cupy"):
        import cupy

        return [int(c) for c in cupy.bincount(flat, minlength=NUM_CLASSES)[:NUM_CLASSES].get()]
    import numpy as np

    return [int(c) for c in np.bincount(flat, minlength=NUM_CLASSES)[:NUM_CLASSES]]


def burn_findings(pixels: list[int], *, region_pct: float | None = None, cm2_per_pixel: float | None = None) -> dict:
    """Clinical numbers from per-class pixel counts.

    Returns pixels per class name, `burn_share_of_skin` (any depth, 0..1, None without visible
    skin), `tbsa_share_of_skin` (partial + full thickness), `tbsa_pct` (None unless the region's
    %TBSA is given) and `area_cm2` per class (None unless the image scale is known).
    """
    skin = sum(pixels[c] for c in SKIN_CLASSES)
    burned = sum(pixels[c] for c in BURN_CLASSES)
    counted = sum(pixels[c] for c in TBSA_CLASSES)
    burn_share = burned / skin if skin else None
    tbsa_share = counted / skin if skin else None
    tbsa_pct = None
    if region_pct is not None:
        tbsa_pct = region_pct * tbsa_share if tbsa_share is not None else 0.0
    area = None
    if cm2_per_pixel is not None:
        area = {name: pixels[i] * cm2_per_pixel for i, name in enumerate(CLASS_NAMES)}
    return {
        "pixels": dict(zip(CLASS_NAMES, pixels)),
        "burn_share_of_skin": burn_share,
        "tbsa_share_of_skin": tbsa_share,
        "tbsa_pct": tbsa_pct,
        "area_cm2": area,
    }
