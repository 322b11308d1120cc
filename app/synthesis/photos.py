"""Real photographs without burns, from installable packages: negatives and backgrounds for training,
and a held-out set for testing that real pictures are not called burn.

Every photograph is named by (package, file inside the package). The training set and the held-out
set never share a photograph; model cards name both. Where the packages are not installed (a lab
machine), `HOLOBURN_PHOTOS` or the `folder` argument names a folder holding the same files by name.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np

from holoburn.clinical.errors import BadInput

# name: (package, path inside the package)
TRAINING_PHOTOS = {
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "immunohistochemistry": ("skimage", "data/ihc.png"),
    "motorcycle_left": ("skimage", "data/motorcycle_left.png"),
    "china": ("sklearn", "datasets/images/china.jpg"),
}
HELD_OUT_PHOTOS = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "retina": ("skimage", "data/retina.jpg"),
    "colorwheel": ("skimage", "data/color.png"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}
PACKAGE_NAMES = {"skimage": "scikit-image", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}


def photo_path(name: str, folder=None) -> Path:
    """Where photograph `name` is: in `folder` (or $HOLOBURN_PHOTOS) by file name, else in its package."""
    package, inside = {**TRAINING_PHOTOS, **HELD_OUT_PHOTOS}[name]
    folder = folder or os.environ.get("HOLOBURN_PHOTOS")
    if folder:
        path = Path(folder) / Path(inside).name
        if path.is_file():
            return path
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise BadInput(
            f"photograph {name!r} needs the package {PACKAGE_NAMES[package]} "
            f"(pip install {PACKAGE_NAMES[package]}) or a folder holding {Path(inside).name} in HOLOBURN_PHOTOS"
        )
    path = Path(spec.origin).parent / inside
    if not path.is_file():
        raise BadInput(f"photograph {name!r}: {path} is missing from the installed {PACKAGE_NAMES[package]}")
    return path


def load_photo(name: str, folder=None) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    path = photo_path(name, folder)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BadInput(f"photograph {name!r}: OpenCV cannot read {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_photos(names, folder=None) -> dict[str, np.ndarray]:
    return {name: load_photo(name, folder) for name in names}


def export_photos(out_dir, names=None) -> list[Path]:
    """Copy the photographs' files into `out_dir` (for a machine without the packages)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or [*TRAINING_PHOTOS, *HELD_OUT_PHOTOS]:
        source = photo_path(name)
        target = out / source.name
        target.write_bytes(source.read_bytes())
        written.append(target)
    return written
