"""The shipped model (engines/models/burn_unet_v1): every precision within the accuracy gate on
the CPU, PyTorch against ONNX Runtime, and real TensorRT-RTX engines from its FP32/FP16/INT8 ONNX.

Held-out and calibration frames are fresh `holoburn synth` recordings (mp4 round trip, as the
pipeline reads them), with seeds used neither in training (1) nor in the card's held-out set
(1000001). Run with -s to see the gate tables and timings.
"""
from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

from holoburn.engines.backend import open_backend
from holoburn.engines.cache import EngineCache
from holoburn.engines.card import load_card
from holoburn.engines.frames import iter_frames_rgb
from holoburn.engines.gate import load_labelled_set
from holoburn.engines.precision import GateRefused, build_precision_model
from test_engines_support import SHIPPED_MISSING, shipped_card_path

pytestmark = pytest.mark.skipif(shipped_card_path() is None, reason=SHIPPED_MISSING)
HAVE_RTX = importlib.util.find_spec("tensorrt_rtx_bindings") is not None
HAVE_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The card, 24 held-out (frame, mask) pairs, 32 calibration frames and a module-wide cache,
    with the FP16 and INT8 models built (converted + gated) once."""
    from holoburn.app.synthesis import synth

    root = tmp_path_factory.mktemp("shipped")
    card = load_card(shipped_card_path())
    synth.generate(root / "holdout", frames=24, seed=2_000_003, frames_per_scene=4)
    synth.generate(root / "calib", frames=32, seed=3_000_005, frames_per_scene=4)
    holdout = load_labelled_set(root / "holdout")
    calib = list(iter_frames_rgb(root / "calib"))
    with pytest.MonkeyPatch.context() as env:  # the cache key of this module, not the user's
        env.setenv("HOLOBURN_CACHE_KEY", str(root / "cache.key"))
        cache = EngineCache(root / "cache")
        outcomes = {}
        for precision in ("fp16", "int8"):
            started = time.perf_counter()
            try:
                result = build_precision_model(card, precision, holdout, calibration_frames=calib, cache=cache, threads=2)
                outcomes[precision] = (result.report, result.path, time.perf_counter() - started)
            except GateRefused as refused:
                outcomes[precision] = (refused.report, None, time.perf_counter() - started)
        yield {"card": card, "holdout": holdout, "cache": cache, "outcomes": outcomes}


def test_every_precision_within_the_gate(shipped, monkeypatch):
    """FP32, FP16 and INT8 (Q/DQ, percentile calibration) through ONNX Runtime on the same frames."""
    card = shipped["card"]
    print(f"\n{card.model_id}: {len(shipped['holdout'])} held-out synth frames, ONNX Runtime CPU")
    for precision, (report, path, seconds) in shipped["outcomes"].items():
        print(f"\n{precision}: converted and gated in {seconds:.1f} s")
        print(report.to_markdown())
    for precision, (report, path, _) in shipped["outcomes"].items():
        assert report.passed, report.to_markdown()
        assert path is not None and path.parent == shipped["cache"].root
        burn_rows = [r for r in report.rows if r.gated]
        assert all(abs(r.dice_delta) * 100 <= 1.0 for r in burn_rows)
    # and each runs through the onnxruntime backend, taken from the cache like `holoburn run` would
    from holoburn.engines.gate import segment

    monkeypatch.setenv("HOLOBURN_ENGINE_CACHE", str(shipped["cache"].root))
    masks = {}
    for precision in ("fp32", "fp16", "int8"):
        backend = open_backend(card, "onnxruntime", precision, device="cpu")
        assert backend.precision == precision
        masks[precision] = np.stack([segment(backend.infer, frame, card) for frame, _ in shipped["holdout"][:4]])
    assert (masks["fp16"] == masks["fp32"]).mean() > 0.99 and (masks["int8"] == masks["fp32"]).mean() > 0.98


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_torch_and_onnxruntime_agree(shipped):
    card = shipped["card"]
    torch_backend = open_backend(card, "torch", "fp32", device="cpu")
    ort_backend = open_backend(card, "onnxruntime", "fp32", device="cpu")
    from holoburn.processing.preprocess import prepare_input

    x = np.concatenate([prepare_input(f, card.input_size, card.mean, card.std)[0] for f, _ in shipped["holdout"][:4]])
    agreement = (torch_backend.infer(x).argmax(1) == ort_backend.infer(x).argmax(1)).mean()
    assert agreement >= 0.995


@pytest.mark.skipif(not HAVE_RTX, reason="TensorRT-RTX wheel not installed: pip install tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings")
def test_rtx_engines_of_every_precision(shipped):
    from holoburn.engines.tensorrt_backend import Profile, ensure_engine

    card, cache = shipped["card"], shipped["cache"]
    profile = Profile.parse(None, card)
    assert profile.label == f"b1-1:224-{card.input_size}-1024"
    lines = []
    for precision in ("fp32", "fp16", "int8"):
        started = time.perf_counter()
        built = ensure_engine(card, "tensorrt-rtx", precision, profile, cache=cache, progress=False)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        again = ensure_engine(card, "tensorrt-rtx", precision, profile, cache=cache, progress=False)
        hit_s = time.perf_counter() - started
        assert not built.cache_hit and again.cache_hit and again.path == built.path and hit_s < 1.0
        lines.append(f"  {precision}: built in {build_s:.2f} s ({built.path.stat().st_size / 1e6:.2f} MB), cache hit {hit_s * 1000:.1f} ms")
    print(f"\nTensorRT-RTX engines of {card.model_id}, profile {profile.label}, no GPU:\n" + "\n".join(lines))
