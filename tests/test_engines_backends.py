"""Backend selection and start-up checks: auto on the CPU, cards that do not match their model,
missing backends and missing precisions, and the torch backend against ONNX Runtime."""
from __future__ import annotations

import importlib.util
import logging
import warnings

import numpy as np
import pytest

from holoburn.clinical.errors import BackendFailure, BadConfig, BadInput, HoloburnError
from holoburn.engines.backend import BACKEND_MODULES, BackendUnavailable, open_backend
from holoburn.engines.card import ModelCardError, load_card
from holoburn.engines.precision import PrecisionModelMissing, build_precision_model
from test_engines_support import engine_cache, engine_data, pixel_card, write_card  # noqa: F401

HAVE_TORCH = importlib.util.find_spec("torch") is not None


def test_auto_on_cpu_picks_onnxruntime(pixel_card, caplog):
    card = load_card(pixel_card)
    with caplog.at_level(logging.INFO, logger="holoburn.engines"):
        backend = open_backend(card, "auto", "fp32", device="cpu")
    assert backend.name == "onnxruntime" and backend.describe()["backend"] == "onnxruntime"
    assert "backend auto -> onnxruntime" in caplog.text
    y = backend.infer(np.zeros((2, 3, 64, 80), np.float32))
    assert y.shape == (2, 6, 64, 80) and y.dtype == np.float32


def test_output_not_matching_card_fails_at_open(pixel_card):
    wrong_name = load_card(write_card(pixel_card.parent, "pixel_model.onnx", model_id="wrong_output", output="probabilities"))
    with pytest.raises(ModelCardError, match="outputs \\['logits'\\].*probabilities"):
        open_backend(wrong_name, "onnxruntime", device="cpu")
    wrong_classes = load_card(write_card(pixel_card.parent, "pixel_model.onnx", model_id="wrong_classes",
                                         classes=["background", "healthy_skin", "burn"]))
    with pytest.raises(ModelCardError, match="3 classes"):
        open_backend(wrong_classes, "onnxruntime", device="cpu")


def test_missing_backend_is_backend_unavailable(pixel_card, monkeypatch):
    card = load_card(pixel_card)
    monkeypatch.setitem(BACKEND_MODULES, "tensorrt", "no_such_backend_module")
    with pytest.raises(BackendUnavailable, match="not part of this build"):
        open_backend(card, "tensorrt", device="cuda")
    with pytest.raises(BadConfig, match="unknown backend"):
        open_backend(card, "openvino", device="cpu")
    if not HAVE_TORCH:
        pytest.skip("torch not installed")
    with pytest.raises(BackendUnavailable):
        open_backend(card, "torch", device="cuda")  # no CUDA here, or no weights for this card


def test_precision_not_built_says_how(engine_cache, pixel_card, engine_data):
    card = load_card(pixel_card)
    with pytest.raises(PrecisionModelMissing, match="holoburn engine build .*--precision fp16"):
        open_backend(card, "onnxruntime", "fp16", device="cpu")
    build_precision_model(card, "fp16", engine_data["holdout"][:6])
    backend = open_backend(card, "onnxruntime", "fp16", device="cpu")
    assert backend.precision == "fp16" and backend.infer(np.zeros((1, 3, 32, 32), np.float32)).dtype == np.float32


@pytest.fixture(scope="module")
def exported_unet(tmp_path_factory):
    """engines/unet.py BurnUNet with random weights: state dict + ONNX (as app/training/train.py exports) + card."""
    torch = pytest.importorskip("torch")
    from holoburn.engines.unet import build_model

    directory = tmp_path_factory.mktemp("unet")
    torch.manual_seed(0)
    model = build_model(6, (8, 16, 16, 32)).eval()
    for module in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    torch.save(model.state_dict(), directory / "unet.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 64, 64),), str(directory / "unet.onnx"), dynamo=False, opset_version=17,
                          input_names=["frames"], output_names=["logits"],
                          dynamic_axes={"frames": {0: "N", 2: "H", 3: "W"}, "logits": {0: "N", 2: "H", 3: "W"}})
    import yaml

    card = write_card(directory, "unet.onnx", model_id="unet", sensitive=("/classifier/Conv",), size=64)
    raw = yaml.safe_load(card.read_text())
    raw.update(torch_state_dict="unet.pt", architecture={"name": "BurnUNet", "widths": [8, 16, 16, 32]})
    card.write_text(yaml.safe_dump(raw))
    return card


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_torch_backend_matches_onnxruntime_on_cpu(exported_unet):
    card = load_card(exported_unet)
    torch_backend = open_backend(card, "torch", "fp32", device="cpu")
    ort_backend = open_backend(card, "onnxruntime", "fp32", device="cpu")
    assert torch_backend.name == "torch" and torch_backend.mode == "eager"  # CUDA graphs only on CUDA
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 96)).astype(np.float32)
    a, b = torch_backend.infer(x), ort_backend.infer(x)
    assert a.shape == b.shape == (2, 6, 64, 96) and a.dtype == np.float32
    assert np.abs(a - b).max() < 1e-3
    assert (a.argmax(1) == b.argmax(1)).mean() > 0.999


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_torch_backend_refuses_wrong_weights(exported_unet, tmp_path):
    import shutil

    import torch

    directory = tmp_path / "wrong"
    shutil.copytree(exported_unet.parent, directory)
    torch.save({"enc1.0.weight": torch.zeros(1)}, directory / "unet.pt")
    with pytest.raises(ModelCardError, match="does not fit the BurnUNet"):
        open_backend(load_card(directory / exported_unet.name), "torch", device="cpu")
    with pytest.raises(BackendUnavailable, match="int8"):
        open_backend(load_card(exported_unet), "torch", "int8", device="cpu")


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_torch_backend_fp16_keeps_sensitive_layers(exported_unet):
    import torch

    card = load_card(exported_unet)
    fp16 = open_backend(card, "torch", "fp16", device="cpu")
    assert fp16.model.classifier.weight.dtype == torch.float32  # card: /classifier/Conv is sensitive
    assert fp16.model.enc1[0].weight.dtype == torch.float16
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype(np.float32)
    ref = open_backend(card, "torch", "fp32", device="cpu").infer(x)
    got = fp16.infer(x)
    assert got.dtype == np.float32 and (got.argmax(1) == ref.argmax(1)).mean() > 0.98
    nhwc = open_backend(card, "torch", "fp16", device="cpu", memory_format="channels_last")
    assert nhwc.model.enc2[0].weight.is_contiguous(memory_format=torch.channels_last)
    logits = nhwc.infer(x)  # the lanes read the logits as NCHW float32
    assert logits.dtype == np.float32 and logits.flags.c_contiguous and np.allclose(logits, got, atol=1e-2)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_batch_norm_folded_into_convolutions_computes_the_same_network():
    import torch

    from holoburn.engines.unet import build_model, fold_batch_norm

    torch.manual_seed(0)
    model = build_model(6, (8, 16, 16, 32)).eval()
    for module in model.modules():  # trained-looking statistics, not the identity a fresh BatchNorm is
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        before = model(x)
        after = fold_batch_norm(model)(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) and m.bias is not None
               for m in model.modules()) == 17  # every 3x3 convolution took its BatchNorm
    assert torch.allclose(before, after, atol=1e-4)


@pytest.mark.gpu
def test_torch_backend_on_cuda_eager_graph_and_onnxruntime_agree(exported_unet):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    card = load_card(exported_unet)
    x = np.random.default_rng(4).standard_normal((1, 3, 128, 128)).astype(np.float32)
    ref = open_backend(card, "onnxruntime", "fp32", device="cpu").infer(x).argmax(1)
    for mode in ("eager", "graph"):
        backend = open_backend(card, "torch", "fp32", device="cuda", mode=mode)
        backend.reserve(1, 128, 128)
        first = backend.infer(x)
        again = backend.infer(x)  # graph replay
        assert np.array_equal(first, again)
        assert (first.argmax(1) == ref).mean() >= 0.995
        on_device = backend.infer(torch.from_numpy(x).cuda())
        assert on_device.is_cuda and on_device.dtype == torch.float32
    half = open_backend(card, "torch", "fp16", device="cuda")  # graph mode: NHWC weights, BatchNorm folded
    assert half.memory_format == "channels_last"
    half.reserve(1, 128, 128)
    got = half.infer(x)
    assert got.dtype == np.float32 and (got.argmax(1) == ref).mean() >= 0.98


def test_engine_errors_are_declared_types():
    """The command line catches only clinical/errors.py types: every engines error is one, none a builtin."""
    from holoburn.engines.frames import FrameSetError
    from holoburn.engines.gate import HoldoutError
    from holoburn.engines.precision import GateRefused
    from holoburn.engines.quantize import CalibrationError
    from holoburn.engines.cache import EngineCacheError
    from holoburn.engines.tensorrt_backend import EngineCorrupt

    for error, declared, exit_code in [
        (BackendUnavailable, BackendFailure, 3), (EngineCorrupt, BackendFailure, 3), (ModelCardError, BadInput, 2),
        (EngineCacheError, BadInput, 2),
        (CalibrationError, BadInput, 2), (HoldoutError, BadInput, 2), (FrameSetError, BadInput, 2),
        (PrecisionModelMissing, BadInput, 2), (GateRefused, HoloburnError, 3),
    ]:
        assert issubclass(error, declared) and error.exit_code == exit_code, error
        assert not issubclass(error, (ValueError, RuntimeError, OSError, KeyError)), error.__mro__
