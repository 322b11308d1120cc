"""TensorRT-RTX engines really built on this CPU-only machine, and the cache around them.

TensorRT-RTX (PyPI `tensorrt-rtx-cu13-libs` + `tensorrt-rtx-cu13-bindings`) builds engines without
a GPU; it cannot run them here (no GPU), nor on the lab's H100 (sm_90 unsupported). Full TensorRT
cannot be installed in this workplace at all: its code shares this build path and is otherwise
never executed here (see engines/tensorrt_backend.py).
"""
from __future__ import annotations

import importlib.util
import json
import time

import onnx
import pytest

from holoburn.clinical.errors import BackendFailure, BadConfig
from holoburn.engines.backend import BackendUnavailable, open_backend
from holoburn.engines.cache import EngineCache
from holoburn.engines.card import load_card
from holoburn.engines.precision import build_precision_model
from holoburn.engines.quantize import load_strategy, quantize_int8
from holoburn.engines.tensorrt_backend import Profile, build_serialized, ensure_engine, import_trt
from holoburn.engines.toolchain import add_engine_arguments, run_engine
from test_engines_support import engine_cache, engine_data, pixel_card  # noqa: F401

HAVE_RTX = importlib.util.find_spec("tensorrt_rtx_bindings") is not None
needs_rtx = pytest.mark.skipif(not HAVE_RTX, reason="TensorRT-RTX wheel not installed: pip install tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings")


def _cli(*argv) -> int:
    import argparse

    parser = add_engine_arguments(argparse.ArgumentParser(prog="holoburn engine"))
    return run_engine(parser.parse_args(list(argv)))


def test_profile_parsing(pixel_card):
    card = load_card(pixel_card)
    assert Profile.parse("224:512:1024").shapes() == ((1, 3, 224, 224), (1, 3, 512, 512), (1, 3, 1024, 1024))
    default = Profile.parse(None, card, max_batch=4)
    assert (default.opt_side, default.max_side, default.max_batch) == (card.input_size, 1024, 4)
    assert default.label == f"b1-4:{min(224, card.input_size)}-{card.input_size}-1024"
    for bad in ("512", "1024:512:224", "a:b:c"):
        with pytest.raises(BadConfig):
            Profile.parse(bad)


def test_full_tensorrt_missing_is_backend_unavailable(pixel_card):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(BackendUnavailable, match="tensorrt is not installed"):
        import_trt("tensorrt")
    with pytest.raises(BackendUnavailable):
        open_backend(load_card(pixel_card), "tensorrt", device="cuda")


@needs_rtx
def test_rtx_engine_runs_only_on_a_gpu(pixel_card):
    with pytest.raises(BackendUnavailable, match="CUDA GPU"):
        open_backend(load_card(pixel_card), "tensorrt-rtx", device="cpu")


@needs_rtx
def test_rtx_real_engine_cache_corruption_and_hit(engine_cache, pixel_card, capsys):
    card = load_card(pixel_card)
    profile = Profile(128, 256, 1024, max_batch=2)
    started = time.perf_counter()
    first = ensure_engine(card, "tensorrt-rtx", "fp32", profile)
    build_s = time.perf_counter() - started
    plan = first.path.read_bytes()
    assert not first.cache_hit and len(plan) > 10_000
    assert first.path.parent == engine_cache
    key = first.key
    assert (key.backend, key.precision, key.profile) == ("tensorrt-rtx", "fp32", "b1-2:128-256-1024")
    assert key.model_sha256 == card.model_sha256() and key.backend_version == str(import_trt("tensorrt-rtx").__version__)
    assert (key.gpu_name, key.compute_capability, key.sm_count) == ("none", "portable", 0)
    header = json.loads(EngineCache(engine_cache).header_path(key, card.model_id).read_text())
    assert header["payload_bytes"] == len(plan) and header["key"] == key.fields()

    started = time.perf_counter()
    hit = ensure_engine(card, "tensorrt-rtx", "fp32", profile)
    hit_s = time.perf_counter() - started
    assert hit.cache_hit and hit.path == first.path and hit_s < 1.0

    assert _cli("verify") == 0
    first.path.write_bytes(plan[: len(plan) // 2])  # a truncated engine (e.g. a crash in a naive writer)
    capsys.readouterr()
    assert _cli("verify") == 1
    assert "truncated" in capsys.readouterr().out
    rebuilt = ensure_engine(card, "tensorrt-rtx", "fp32", profile)
    assert not rebuilt.cache_hit and rebuilt.path.stat().st_size > len(plan) // 2
    assert _cli("verify") == 0
    print(f"\nTensorRT-RTX fp32 engine of the test model: built in {build_s:.2f} s, cache hit in {hit_s * 1000:.1f} ms")


@needs_rtx
def test_rtx_builds_fp16_and_qdq_int8_onnx(engine_cache, tmp_path, pixel_card, engine_data):
    """TensorRT 11 / RTX take precision from the ONNX: the FP16 and Q/DQ INT8 models must build."""
    card = load_card(pixel_card)
    fp16 = build_precision_model(card, "fp16", engine_data["holdout"][:6])
    engine = ensure_engine(card, "tensorrt-rtx", "fp16", Profile(128, 128, 512))
    assert not engine.cache_hit and engine.onnx == fp16.path and engine.key.model_sha256 != card.model_sha256()
    int8 = tmp_path / "int8.onnx"
    quantize_int8(card.onnx_path, int8, card, engine_data["calib"][:4], load_strategy())
    plan = build_serialized(int8, "tensorrt-rtx", "int8", Profile(128, 128, 512), "frames", progress=False)
    assert len(plan) > 10_000
    with pytest.raises(BadConfig, match="compute capability"):
        build_serialized(card.onnx_path, "tensorrt-rtx", "fp32", Profile(128, 128, 512), "frames", target="sm99")
    sm86 = build_serialized(card.onnx_path, "tensorrt-rtx", "fp32", Profile(128, 128, 512), "frames", target="sm86", progress=False)
    assert len(sm86) > 10_000


@needs_rtx
def test_rtx_parse_error_is_clear(tmp_path):
    broken = tmp_path / "broken.onnx"
    model = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("NoSuchOp", ["frames"], ["logits"], domain="holoburn.test")], "broken",
        [onnx.helper.make_tensor_value_info("frames", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 6, 8, 8])],
    ), opset_imports=[onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("holoburn.test", 1)])
    onnx.save(model, broken)
    with pytest.raises(BackendFailure, match="could not parse"):
        build_serialized(broken, "tensorrt-rtx", "fp32", Profile(8, 8, 8), "frames", progress=False)
