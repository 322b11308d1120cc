"""Shared fixtures: small real files (an ONNX model with its card, videos) made on the fly."""
from __future__ import annotations

import os
import tempfile

import cv2
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("HOLOSCAN_LOG_LEVEL", "ERROR")
# the engine cache's signing key: one per test session, never the user's own (~/.config/holoburn)
os.environ.setdefault("HOLOBURN_CACHE_KEY", os.path.join(tempfile.mkdtemp(prefix="holoburn_test_key_"), "cache.key"))

CLASSES = ["background", "healthy_skin", "superficial", "superficial_partial", "deep_partial", "full_thickness"]


def write_card(directory, onnx_name, *, model_id="tiny", classes=CLASSES, output="logits", size=64,
               mean=(128.0, 128.0, 128.0), std=(64.0, 64.0, 64.0), sensitive=(), intended_use="test model"):
    """A model card for a test ONNX model beside it (the one card writer of the tests)."""
    card = {
        "model_id": model_id,
        "onnx": onnx_name,
        "input": {"name": "frames", "size": size, "multiple_of": 16},
        "output": {"name": output, "channels": len(classes)},
        "classes": list(classes),
        "normalisation": {"mean": list(mean), "std": list(std)},
        "intended_use": intended_use,
    }
    if sensitive:
        card["sensitive_layers"] = list(sensitive)
    path = directory / f"{model_id}.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


def tiny_onnx(path, out_channels=6, output="logits"):
    """A real ONNX model: one 1x1 convolution from RGB to class logits, dynamic N, H, W.

    Its weights make the red channel vote for full thickness and green for healthy skin, so its
    masks are predictable from the colours of a test frame.
    """
    from onnx import TensorProto, helper, numpy_helper

    weight = np.zeros((out_channels, 3, 1, 1), np.float32)
    weight[min(5, out_channels - 1), 0] = 1.0
    weight[1, 1] = 1.0
    graph = helper.make_graph(
        [helper.make_node("Conv", ["frames", "w"], [output])],
        "tiny",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["n", out_channels, "h", "w"])],
        [numpy_helper.from_array(weight, "w")],
    )
    return save_onnx(graph, path)


def save_onnx(graph, path):
    """An ONNX graph as a checked opset-17 model file at `path` (ONNX Runtime reads IR 8)."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="session")
def tiny_card(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_model")
    tiny_onnx(directory / "tiny.onnx")
    return write_card(directory, "tiny.onnx")


def write_video(path, frames, fps=30.0, fourcc="mp4v"):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"cannot write {path}"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="session")
def red_green_video(tmp_path_factory):
    """12 frames 160x120: left half red (-> full thickness), right half green (-> healthy skin)."""
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[:, :80] = (230, 20, 20)
    frame[:, 80:] = (20, 230, 20)
    return write_video(tmp_path_factory.mktemp("video") / "red_green.mp4", [frame] * 12)


#: result fields that depend on timing: latencies, and the lane (escalation applies from whichever
#: frame is triaged after the result that raised it); a frame's mask and numbers never do
TIMING_FIELDS = ("latency_ms", "stage_ms", "lane", "lane_reason")


def timing_free(path, also=()) -> list[dict]:
    """The records of a results.jsonl without the fields that depend on timing (and `also`)."""
    import json

    drop = set(TIMING_FIELDS) | set(also)
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in Path(path).read_text().splitlines()]
