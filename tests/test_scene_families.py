"""Scene families of `holoburn synth` and the photographs used for training and held-out checks."""
import ast
from pathlib import Path

import numpy as np
import pytest

from holoburn.app.synthesis import photos, synth
from holoburn.app.training import train
from holoburn.clinical.depth import BACKGROUND, BURN_CLASSES, HEALTHY_SKIN

SIZE = (160, 120)
ROOT = Path(__file__).resolve().parents[1]


def test_every_family_is_deterministic_and_labelled():
    for family in synth.FAMILIES:
        a = list(synth.iter_frames(4, seed=21, size=SIZE, frames_per_scene=2, family=family))
        b = list(synth.iter_frames(4, seed=21, size=SIZE, frames_per_scene=2, family=family))
        for (fa, ma), (fb, mb) in zip(a, b):
            assert fa.shape == (120, 160, 3) and fa.dtype == np.uint8 and ma.shape == (120, 160)
            assert np.array_equal(fa, fb) and np.array_equal(ma, mb)
            assert ma.max() < 6


def test_no_skin_scenes_are_all_background_and_others_show_skin_and_burn():
    masks = [m for _, m in synth.iter_frames(6, seed=3, size=SIZE, frames_per_scene=1, family="no_skin")]
    assert all((m == BACKGROUND).all() for m in masks)
    for family in ("varied", "contact"):
        masks = [m for _, m in synth.iter_frames(12, seed=3, size=SIZE, frames_per_scene=1, family=family)]
        assert np.mean([(m == HEALTHY_SKIN).mean() for m in masks]) > 0.1
        assert sum(np.isin(m, BURN_CLASSES).any() for m in masks) >= 8


def test_families_draw_different_scenes_from_one_seed():
    frames = {f: synth.scene_frames(5, 0, 1, SIZE, family=f)[0][0] for f in synth.FAMILIES}
    assert len({v.tobytes() for v in frames.values()}) == len(synth.FAMILIES)


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="family must be one of"):
        synth.iter_frames(2, seed=1, size=SIZE, family="cartoon")


def test_training_and_held_out_photographs_never_overlap_and_load():
    assert not set(photos.TRAINING_PHOTOS) & set(photos.HELD_OUT_PHOTOS)
    paths = {photos.photo_path(n) for n in [*photos.TRAINING_PHOTOS, *photos.HELD_OUT_PHOTOS]}
    assert len(paths) == len(photos.TRAINING_PHOTOS) + len(photos.HELD_OUT_PHOTOS)
    image = photos.load_photo("chelsea")
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


def test_photographs_come_from_a_folder_where_the_packages_are_missing(tmp_path, monkeypatch):
    photos.export_photos(tmp_path, ["coffee"])
    monkeypatch.setenv("HOLOBURN_PHOTOS", str(tmp_path))
    assert photos.photo_path("coffee") == tmp_path / "coffee.png"


def test_held_out_families_never_train():
    """The contact family and the independent generator measure generalisation: no training use."""
    assert "contact" not in train.TRAINING_MIX and abs(sum(train.TRAINING_MIX.values()) - 1) < 1e-9
    families = {train.scene_family(1, k) for k in range(400)}
    assert families == set(train.TRAINING_MIX)
    for path in [*(ROOT / "app" / "training").glob("*.py"), *(ROOT / "app" / "synthesis").glob("*.py")]:
        if path.name in ("trust.py", "independent.py"):
            continue
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        assert "independent" not in imported, path


def test_the_accuracy_gate_holds_out_what_the_model_never_trained_on():
    """The generated hold-out of `run`/`engine build`, in the families the gate judges one by one:
    contact, varied and independent-generator scenes with every burn class among them (an untested
    class refuses a model), and the held-out photographs as no burn."""
    from holoburn.app.run.engine_setup import synthetic_sets

    holdout, calibration = synthetic_sets(holdout_frames=16, calibration_frames=2, size=(320, 240))
    assert list(holdout) == ["contact", "varied", "independent", "photographs"]
    assert [len(holdout[name]) for name in ("contact", "varied", "independent")] == [6, 5, 5]
    scenes, pictures = holdout["contact"] + holdout["varied"] + holdout["independent"], holdout["photographs"]
    present = set().union(*(set(np.unique(m).tolist()) for _, m in scenes))
    assert set(BURN_CLASSES) <= present
    assert len(pictures) == len(photos.HELD_OUT_PHOTOS)
    assert all((m == BACKGROUND).all() and f.shape[:2] == m.shape for f, m in pictures)
    assert len(calibration) == 2
