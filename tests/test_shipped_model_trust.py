"""The shipped model on pictures it never trained on, through the pipeline's own CPU lane runtime
(picture checks, model, uncertain pixels, findings, triage) with the config's assessability limits.
The full figures (300 calibration frames, 150 frames per family) are `holoburn trust`'s, in the card."""
import numpy as np
import pytest

from holoburn.app.config import load_config
from holoburn.app.graph import assess_limits
from holoburn.app.synthesis import independent, photos, synth
from holoburn.app.training import trust
from holoburn.engines.card import DEFAULT_CARD, load_card
from holoburn.processing.frame import Frame

pytest.importorskip("skimage", reason="scikit-image ships the held-out photographs (test extra)")


@pytest.fixture(scope="module")
def runtime():
    card = load_card(DEFAULT_CARD)
    return trust.lane_runtime(card, assess_limits(load_config(None), card))


def test_held_out_photographs_are_never_called_burn(runtime):
    checked = trust.check_photographs(runtime, photos.HELD_OUT_PHOTOS)
    assert all(c["pass"] for c in checked.values()), checked
    assert all(c.get("triage") in (None, "none", "assess") for c in checked.values())  # never "refer"


def test_the_photograph_check_fails_a_picture_called_burn(runtime, monkeypatch):
    """The check can fail: a picture the model calls mostly burn and refers does not pass."""
    from holoburn.clinical.depth import FULL_THICKNESS

    def all_burn(frames):
        for frame in frames:
            frame.findings = {"assessable": True, "triage": {"level": "refer"}}
            frame.extra["shown_mask"] = np.full((8, 8), FULL_THICKNESS, np.uint8)
        return frames

    monkeypatch.setattr(trust, "assess_frames", lambda rt, images: all_burn([Frame.of("t", 0, 0.0, im) for im in images]))
    checked = trust.check_photographs(runtime, ["chelsea"])
    assert checked["chelsea"] == checked["chelsea"] | {"assessable": True, "triage": "refer", "pass": False}


def test_a_wound_outline_never_trained_on_is_segmented(runtime):
    result = trust.check_family(runtime, list(synth.iter_frames(24, 8, (640, 480), 4, family="contact")))
    assert result["coverage"] >= 0.9 and result["all_frames"]["any_burn_dice"] >= 0.9, result


def test_scenes_from_an_independent_generator(runtime):
    """Measured 0.81 any-burn Dice over 150 frames (card); 24 frames of another seed vary more."""
    result = trust.check_family(runtime, independent.independent_frames(24, 8, (640, 480)))
    assert result["all_frames"]["any_burn_dice"] >= 0.7, result


def test_the_shipped_model_says_it_is_a_demonstration():
    """Trained on synthetic scenes: its card says so, and so every overlay does (clinical.overlay)."""
    assert load_card(DEFAULT_CARD).demonstration
