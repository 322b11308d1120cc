"""QAT helpers (bench/int8_qat.py, issue 12's INT8 experiment): fake quantization against an explicit quantize-dequantize,
the placement of the quantizers on a tiny BurnUNet, and one fine-tuning step with frozen BatchNorm."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is an optional extra (pip install 'holoburn[train]')")

import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402

from holoburn.engines.unet import build_model  # noqa: E402

_spec = importlib.util.spec_from_file_location("int8_qat", Path(__file__).resolve().parent.parent / "bench" / "int8_qat.py")
qat = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(qat)

TINY = (8, 16, 16, 32)


def explicit_qdq(x, scale, qmin, qmax):
    return torch.clamp(torch.round(x / scale), qmin, qmax) * scale


def test_per_tensor_fake_quant_matches_explicit_qdq():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5) * 3
    amax = 4.0
    got = qat.fake_quant_per_tensor(x, amax)
    assert torch.allclose(got, explicit_qdq(x, amax / 127, -128, 127), atol=1e-6)
    # saturation: -128 and 127 steps, as QuantizeLinear int8 with zero point 0
    edge = qat.fake_quant_per_tensor(torch.tensor([-300.0, 300.0, 0.0, 2.4]), 127.0)
    assert edge.tolist() == [-128.0, 127.0, 0.0, 2.0]


def test_per_tensor_fake_quant_passes_gradient_inside_range():
    x = torch.tensor([0.3, -1.2, 50.0], requires_grad=True)
    qat.fake_quant_per_tensor(x, 2.0).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("axis", [0, 1])
def test_per_channel_fake_quant_matches_explicit_qdq(axis):
    torch.manual_seed(1)
    w = torch.randn(4, 3, 3, 3)
    w.select(axis, 1).mul_(10)  # channels with very different ranges
    got = qat.fake_quant_per_channel(w, axis)
    dims = [d for d in range(w.dim()) if d != axis]
    shape = [1] * w.dim()
    shape[axis] = w.shape[axis]
    scale = (w.abs().amax(dim=dims) / 127).view(shape)
    assert torch.allclose(got, explicit_qdq(w, scale, -127, 127), atol=1e-6)


def test_percentile_amax():
    x = torch.arange(1, 100_001, dtype=torch.float32)
    assert qat.percentile_amax(x, 99.999) == 100_000.0
    assert qat.percentile_amax(-x, 99.0) == 99_001.0


def test_float_modules_from_card_names():
    model = build_model(widths=TINY)
    assert qat.float_modules(model, ["/enc1/enc1.0/Conv", "/classifier/Conv"]) == ["enc1.0", "classifier"]
    assert qat.float_modules(model, ["/up*/ConvTranspose"]) == ["up4", "up3", "up2", "up1"]
    with pytest.raises(qat.QATError):
        qat.float_modules(model, ["/nope/Conv"])


def test_quantizers_where_the_int8_model_has_qdq():
    """Configured recipe: conv (+BN) outputs, transposed-conv outputs, the concatenations and the
    ReLU after the float stem get their own scale; float layers keep float weights."""
    torch.manual_seed(2)
    model = build_model(widths=TINY).eval()
    wrapped = qat.QATModel(model, ["enc1.0", "classifier"])
    used = wrapped.calibrate([torch.randn(2, 3, 32, 32)])
    convs = ["enc1.3", "enc2.0", "enc2.3", "enc3.0", "enc3.3", "enc4.0", "enc4.3", "bottleneck.0",
             "dec4.0", "dec4.3", "dec3.0", "dec3.3", "dec2.0", "dec2.3", "dec1.0", "dec1.3"]
    expected = {f"{c}:output" for c in convs} | {f"up{k}:output" for k in (1, 2, 3, 4)} \
        | {f"dec{k}.0:input" for k in (1, 2, 3, 4)} | {"enc1.3:input"}
    assert set(used) == expected
    assert all(v > 0 for v in used.values())
    assert "enc1.0" not in wrapped.weights and "classifier" not in wrapped.weights
    assert len(wrapped.weights) == 20


def test_qat_step_keeps_batch_norm_statistics_and_strips_clean():
    torch.manual_seed(3)
    model = build_model(widths=TINY)
    keys = list(model.state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = qat.QATModel(model, ["enc1.0", "classifier"], scale_jitter=0.1)
    wrapped.calibrate([torch.randn(2, 3, 32, 32)])
    wrapped.set_mode("train")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 6, (2, 32, 32))
    loss = qat.qat_step(wrapped, optimizer, x, y, criterion)
    assert loss == loss and loss > 0  # finite
    plain = wrapped.strip()
    after = plain.state_dict()
    assert sorted(after) == sorted(keys)
    for k in keys:
        if "running_" in k or "num_batches_tracked" in k:
            assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["enc2.0.weight"], after["enc2.0.weight"])
    # stripped: a plain float network again (no hooks, no parametrization)
    plain.eval()
    with torch.no_grad():
        out = plain(x)
    assert out.shape == (2, 6, 32, 32)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in plain.modules())
    assert not hasattr(plain.enc2[0], "parametrizations")


def test_distillation_loss_zero_for_the_teacher_itself_and_padding_ignored():
    torch.manual_seed(4)
    teacher = torch.randn(2, 6, 8, 8)
    valid = torch.ones(2, 8, 8)
    assert float(qat.distillation_loss(teacher, teacher, valid)) == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(2, 6, 8, 8)
    assert float(qat.distillation_loss(other, teacher, valid)) > 0
    valid[:, :, 4:] = 0  # padding: a difference there costs nothing
    moved = teacher.clone()
    moved[..., 4:] += torch.randn(2, 6, 8, 4)
    assert float(qat.distillation_loss(moved, teacher, valid)) == pytest.approx(0.0, abs=1e-6)


def test_qat_step_with_teacher():
    torch.manual_seed(5)
    model = build_model(widths=TINY)
    teacher = build_model(widths=TINY)
    teacher.load_state_dict(model.state_dict())
    teacher.eval().requires_grad_(False)
    wrapped = qat.QATModel(model, ["enc1.0", "classifier"])
    wrapped.calibrate([torch.randn(2, 3, 32, 32)])
    wrapped.set_mode("train")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
    y = torch.randint(0, 6, (2, 32, 32))
    y[:, :, :4] = 255  # letterbox padding
    loss = qat.qat_step(wrapped, optimizer, torch.randn(2, 3, 32, 32), y, criterion, teacher=teacher, distill=0.9)
    assert loss == loss and loss > 0
    assert all(not p.requires_grad for p in teacher.parameters())
