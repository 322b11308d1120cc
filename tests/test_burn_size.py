import numpy as np
import pytest

from holoburn.clinical.burn_size import burn_findings, count_pixels, region_tbsa_pct
from holoburn.clinical.depth import CLASS_NAMES


def mask_with(counts):
    """A 1-row mask holding `counts[c]` pixels of each class c."""
    return np.concatenate([np.full(n, c, np.uint8) for c, n in enumerate(counts)])[None, :]


def test_counts_and_shares_on_known_mask():
    # 100 background, 50 healthy, 10 superficial, 20 sup. partial, 15 deep partial, 5 full
    mask = mask_with([100, 50, 10, 20, 15, 5])
    pixels = count_pixels(mask)
    assert pixels == [100, 50, 10, 20, 15, 5]
    f = burn_findings(pixels, region_pct=9.0)
    skin = 50 + 10 + 20 + 15 + 5
    assert f["pixels"] == dict(zip(CLASS_NAMES, [100, 50, 10, 20, 15, 5]))
    assert f["burn_share_of_skin"] == pytest.approx(50 / skin)
    # superficial burn is left out of TBSA
    assert f["tbsa_share_of_skin"] == pytest.approx(40 / skin)
    assert f["tbsa_pct"] == pytest.approx(9.0 * 40 / skin)
    assert f["area_cm2"] is None


def test_only_superficial_burn_gives_zero_tbsa():
    f = burn_findings([0, 60, 40, 0, 0, 0], region_pct=18.0)
    assert f["burn_share_of_skin"] == pytest.approx(0.4)
    assert f["tbsa_pct"] == 0.0


def test_no_skin_in_view():
    f = burn_findings([500, 0, 0, 0, 0, 0], region_pct=9.0)
    assert f["burn_share_of_skin"] is None and f["tbsa_share_of_skin"] is None
    assert f["tbsa_pct"] == 0.0


def test_area_with_scale():
    f = burn_findings([0, 4, 0, 0, 0, 2], cm2_per_pixel=0.25)
    assert f["area_cm2"]["full_thickness"] == pytest.approx(0.5)
    assert f["tbsa_pct"] is None


def test_rule_of_nines_and_lund_browder():
    assert sum(region_tbsa_pct(r) for r in
               ["head", "left_arm", "right_arm", "left_leg", "right_leg", "anterior_trunk", "posterior_trunk", "perineum"]) == 100
    assert region_tbsa_pct("head", age_years=0) == 19.0
    assert region_tbsa_pct("head", age_years=40) == 7.0
    assert region_tbsa_pct("left_leg", age_years=0) == 14.0
    assert 13.0 < region_tbsa_pct("head", age_years=3) < 17.0  # between the 1- and 5-year columns
    assert region_tbsa_pct("left_arm", age_years=3) == 9.0
    with pytest.raises(ValueError, match="unknown body region"):
        region_tbsa_pct("tail")
