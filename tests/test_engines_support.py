"""Helpers shared by the engine tests (no tests here): a small but real segmentation model.

`pixel_model_onnx` fits, in closed form, a 4-layer convolutional model (3x3 depthwise blur,
1x1 random-feature layer + ReLU, 1x1 second layer + ReLU, 1x1 class head) to synthetic burn frames,
so that FP16/INT8 accuracy, the gate and TensorRT builds are exercised on a model that actually
segments, without training and without the shipped model. Input `frames` (N, 3, H, W) float32
with dynamic N/H/W, output `logits` (N, 6, H, W).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

CLASSES = ["background", "healthy_skin", "superficial", "superficial_partial", "deep_partial", "full_thickness"]
MEAN = (128.0, 110.0, 100.0)
STD = (60.0, 55.0, 55.0)
INPUT_SIZE = 128
FRAME_SIZE = (320, 240)  # (width, height)


def synthetic_pairs(frames: int, seed: int, frames_per_scene: int = 2):
    """(frame (240, 320, 3) uint8 RGB, mask (240, 320) uint8) pairs from holoburn synth."""
    from holoburn.app.synthesis.synth import iter_frames

    return list(iter_frames(frames, seed, size=FRAME_SIZE, frames_per_scene=frames_per_scene))


def _features(x, w1, b1, w2, b2):
    h = np.maximum(x @ w1.T + b1, 0)
    return np.maximum(h @ w2.T + b2, 0)


def pixel_model_onnx(path: Path, pairs, hidden: int = 64, seed: int = 0, degrade: float = 0.0) -> Path:
    """Write the fitted model to `path`. degrade > 0 adds noise of that scale to the head (a bad copy)."""
    import cv2
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for frame, mask in pairs:
        blurred = cv2.blur(frame.astype(np.float32), (3, 3))
        norm = (blurred - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
        pick = rng.integers(0, mask.size, 4000)
        xs.append(norm.reshape(-1, 3)[pick])
        ys.append(mask.ravel()[pick])
    x, y = np.concatenate(xs), np.concatenate(ys)
    w1 = rng.standard_normal((hidden, 3)).astype(np.float32) * 1.5
    b1 = rng.standard_normal(hidden).astype(np.float32) * 0.5
    w2 = (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
    b2 = np.full(hidden, 0.1, np.float32)
    f = np.concatenate([_features(x, w1, b1, w2, b2), np.ones((len(x), 1), np.float32)], 1)
    target = np.eye(len(CLASSES), dtype=np.float32)[y] * 4.0 - 2.0
    weights = (1.0 / np.maximum(np.bincount(y, minlength=len(CLASSES)), 1)) ** 0.5  # balance the small burn classes
    fw = f * weights[y, None]
    head = np.linalg.solve(fw.T @ f + 1e-2 * np.eye(f.shape[1]), fw.T @ target).T.astype(np.float32)
    if degrade:
        head = head + rng.standard_normal(head.shape).astype(np.float32) * degrade
    blur = np.full((3, 1, 3, 3), 1.0 / 9.0, np.float32)
    inits = [
        numpy_helper.from_array(blur, "blur_w"),
        numpy_helper.from_array(w1.reshape(hidden, 3, 1, 1), "stem_w"),
        numpy_helper.from_array(b1, "stem_b"),
        numpy_helper.from_array(w2.reshape(hidden, hidden, 1, 1), "mix_w"),
        numpy_helper.from_array(b2, "mix_b"),
        numpy_helper.from_array(head[:, :-1].reshape(len(CLASSES), hidden, 1, 1).copy(), "head_w"),
        numpy_helper.from_array(head[:, -1].copy(), "head_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["frames", "blur_w"], ["blurred"], name="blur", group=3, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["blurred", "stem_w", "stem_b"], ["stem_y"], name="stem"),
        helper.make_node("Relu", ["stem_y"], ["stem_r"], name="stem_relu"),
        helper.make_node("Conv", ["stem_r", "mix_w", "mix_b"], ["mix_y"], name="mix"),
        helper.make_node("Relu", ["mix_y"], ["mix_r"], name="mix_relu"),
        helper.make_node("Conv", ["mix_r", "head_w", "head_b"], ["logits"], name="head"),
    ]
    graph = helper.make_graph(
        nodes, "pixel_model",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(CLASSES), "H", "W"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_card(directory: Path, onnx_name: str, *, model_id: str = "pixel_model", sensitive=("head",),
               size: int = INPUT_SIZE, **kwargs) -> Path:
    """conftest.write_card with the pixel model's normalisation and a sensitive layer."""
    from conftest import write_card as card_writer

    return card_writer(Path(directory), onnx_name, model_id=model_id, sensitive=sensitive, size=size, mean=MEAN,
                       std=STD, intended_use="engine tests only", **kwargs)


def write_labelled_dir(directory: Path, pairs) -> Path:
    """frames/NNNNNN.png + masks/NNNNNN.png, as `holoburn synth --png` lays them out."""
    import cv2

    (directory / "frames").mkdir(parents=True, exist_ok=True)
    (directory / "masks").mkdir(exist_ok=True)
    for i, (frame, mask) in enumerate(pairs):
        cv2.imwrite(str(directory / "frames" / f"{i:06d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(directory / "masks" / f"{i:06d}.png"), mask)
    return directory


# -- fixtures (imported by the test_engines_* files) ---------------------------------------------
import pytest  # noqa: E402

from holoburn.engines.card import DEFAULT_CARD  # noqa: E402


def shipped_card_path():
    """The shipped model's card when it and its ONNX are present, else None."""
    if not DEFAULT_CARD.is_file():
        return None
    card = yaml.safe_load(DEFAULT_CARD.read_text()) or {}
    onnx_file = DEFAULT_CARD.parent / str(card.get("onnx", ""))
    return DEFAULT_CARD if onnx_file.is_file() else None


SHIPPED_MISSING = "the shipped model (engines/models/burn_unet_v1.onnx + .yaml) is not in this tree yet"


@pytest.fixture(scope="session")
def engine_data():
    """Disjoint synthetic sets: 'train' (fits the test model), 'holdout' (gate), 'calib' (INT8 frames)."""
    return {
        "train": synthetic_pairs(30, 7, 3),
        "holdout": synthetic_pairs(24, 99, 2),
        "calib": [frame for frame, _ in synthetic_pairs(16, 55, 2)],
    }


@pytest.fixture(scope="session")
def pixel_card(tmp_path_factory, engine_data):
    """Path of a card + fitted ONNX in a directory of their own."""
    directory = tmp_path_factory.mktemp("pixel_model")
    pixel_model_onnx(directory / "pixel_model.onnx", engine_data["train"])
    return write_card(directory, "pixel_model.onnx")


@pytest.fixture()
def engine_cache(tmp_path, monkeypatch):
    """A fresh engine cache directory, also set as $HOLOBURN_ENGINE_CACHE, with its own key
    ($HOLOBURN_CACHE_KEY, beside the cache, not in the user's config folder)."""
    root = tmp_path / "engine-cache"
    monkeypatch.setenv("HOLOBURN_ENGINE_CACHE", str(root))
    monkeypatch.setenv("HOLOBURN_CACHE_KEY", str(tmp_path / "cache.key"))
    return root
