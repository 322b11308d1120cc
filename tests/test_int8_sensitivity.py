"""The per-layer INT8 sensitivity ranking of bench/int8_recipes.py (issue 12), on a tiny ONNX net.

The net is stem conv -> ReLU -> a conv with a huge-dynamic-range weight -> ReLU -> classifier conv.
That middle conv's every output channel has a weight of 1000 on an input channel that is always
zero, beside weights near 1 that carry the signal: one INT8 scale per output channel then rounds
the useful weights to 0, so quantizing that conv alone wrecks the output and it must rank first.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from conftest import save_onnx, write_card
from holoburn.engines.card import load_card
from holoburn.engines.quantize import load_strategy

BENCH = Path(__file__).resolve().parent.parent / "bench" / "int8_recipes.py"


def _bench():
    spec = importlib.util.spec_from_file_location("int8_recipes", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _three_conv_net(path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    stem = rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    stem[0] = 0.0  # channel 0 of the stem's output is always 0 (after the ReLU too)
    wide = rng.normal(0, 0.5, (8, 8, 3, 3)).astype(np.float32)
    wide[:, 0] = 1000.0  # huge weights on the always-zero channel: useless, but they set the INT8 scale
    head = rng.normal(0, 0.5, (6, 8, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["frames", "stem_w"], ["a"], name="/stem/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["a_relu"], name="/stem/Relu"),
        helper.make_node("Conv", ["a_relu", "wide_w"], ["b"], name="/wide_range/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b"], ["b_relu"], name="/wide_range/Relu"),
        helper.make_node("Conv", ["b_relu", "head_w"], ["logits"], name="/classifier/Conv"),
    ]
    graph = helper.make_graph(
        nodes, "three_conv",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 6, "h", "w"])],
        [numpy_helper.from_array(stem, "stem_w"), numpy_helper.from_array(wide, "wide_w"), numpy_helper.from_array(head, "head_w")],
    )
    return save_onnx(graph, path)


@pytest.fixture(scope="module")
def ranking(tmp_path_factory):
    pytest.importorskip("onnxruntime.quantization")
    directory = tmp_path_factory.mktemp("sensitivity")
    _three_conv_net(directory / "net.onnx")
    card = load_card(write_card(directory, "net.onnx", model_id="net", sensitive=("/classifier/Conv",)))
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(10)]
    return _bench().layer_sensitivity(card, frames[:6], frames[6:], load_strategy(), directory, threads=1)


def test_every_quantized_layer_ranked_once(ranking):
    layers = [row["layer"] for row in ranking["layers"]]
    # the card's sensitive layer (the classifier) is ranked too: the ranking ignores the card
    assert sorted(layers) == sorted(["/stem/Conv", "/stem/Relu", "/wide_range/Conv", "/wide_range/Relu", "/classifier/Conv"])
    kls = [row["alone_int8"]["kl"] for row in ranking["layers"]]
    assert kls == sorted(kls, reverse=True)


def test_quantizing_the_huge_range_conv_alone_ranks_it_first(ranking):
    first, *rest = ranking["layers"]
    assert first["layer"] == "/wide_range/Conv"
    assert first["alone_int8"]["kl"] > 10 * max(row["alone_int8"]["kl"] for row in rest)
    # left alone in float (the rest INT8) it removes most of the all-INT8 model's distance from FP32
    assert first["alone_float"]["kl"] < 0.5 * ranking["all_int8"]["kl"]
    assert first["alone_int8"]["class_changed_pct"] > 5.0
