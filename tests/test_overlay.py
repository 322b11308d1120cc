import numpy as np

from holoburn.clinical.depth import CLASS_COLOURS_RGB
from holoburn.clinical.overlay import annotate, no_signal, summary_lines, tint


def test_tint_blends_only_burn_classes():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    mask = rng.integers(0, 6, (60, 80)).astype(np.uint8)
    out = tint(frame, mask, alpha=0.5)
    assert out.shape == frame.shape and out.dtype == np.uint8
    unburned = mask < 2
    assert np.array_equal(out[unburned], frame[unburned])
    for cls in (2, 3, 4, 5):
        expected = frame[mask == cls] * 0.5 + CLASS_COLOURS_RGB[cls] * 0.5
        assert np.abs(out[mask == cls] - expected).max() <= 1.0


def test_annotate_draws_outline_and_text():
    frame = np.zeros((120, 160, 3), np.uint8)
    mask = np.ones((120, 160), np.uint8)
    mask[60:90, 100:140] = 5  # clear of the legend's panel (top left)
    result = {"burn_share_of_skin": 0.083, "tbsa_pct": None, "triage": {"level": "refer", "flags": ["full_thickness_present"], "note": "decision support"}}
    lines = summary_lines(result)
    assert lines[0] == "burn: 8.3% of visible skin" and "REFER" in lines[1]
    image = annotate(frame.copy(), mask, lines, "EMERGENCY")
    assert (image[60, 110] == 255).all()  # burn edge drawn white
    assert image[100:, :].any()  # text at the bottom


def test_no_signal_frame():
    image = no_signal(48, 64)
    assert image.shape == (48, 64, 3) and image.max() == 255
