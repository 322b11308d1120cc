"""Quantization-aware fine-tuning (QAT) of the shipped BurnUNet for the INT8 (Q/DQ) model.

The INT8 model that TensorRT runs is made by post-training quantization (engines/quantize.py,
configs/quantization.yaml): ONNX Runtime's static QDQ quantizer on the BatchNorm-folded graph,
symmetric int8 (zero point 0, range -127..127) per tensor for activations, calibrated by a
percentile of |x|, and symmetric int8 per output channel for weights; biases and the card's
`sensitive_layers` stay float. This module fine-tunes a copy of the float network with fake
quantization (straight-through estimator) placed where that quantizer puts its Q/DQ pairs, so
the weights learn to live with the rounding, then exports a plain float ONNX exactly as
train.py's `export_onnx` does. The INT8 model is still made from that ONNX by the same PTQ
recipe (its scales are calibrated again); QAT only changes the float weights.

Where the Q/DQ pairs are (checked on the configured recipe, `quantize_conv_outputs: true`, on the
shipped model; BatchNorm is folded into the convolution before quantization):

- every quantized Conv2d / ConvTranspose2d: its weight per output channel (Conv2d axis 0,
  ConvTranspose2d axis 1; per-channel scales of the BN-folded weight equal those of the raw weight
  times the BN factor, so fake-quantizing the raw weight per channel is the same rounding), and
  its output (after the following BatchNorm, before the ReLU) with its own scale;
- ReLU and MaxPool outputs reuse their input's scale (a no-op on values already on that grid);
- a quantized convolution whose input is not already on a grid gets its own Q/DQ there: the
  Concat outputs (decoder inputs) and the ReLU after a convolution kept in float (enc1's stem);
- layers kept in float (card `sensitive_layers`): float weights and no Q/DQ on their output.
  With `quantize_conv_outputs: false` the Q/DQ sit at the inputs of quantized convolutions only.

Activation scales: amax = the `percentile` (the recipe's 99.999) of |x| over a batch, averaged over
calibration batches, then updated by an EMA during fine-tuning; scale = amax / 127. Optionally the
scales are jittered each step (`scale_jitter`), so the weights do not fit one exact set of
scales: PTQ calibrates its own scales on another frame draw. BatchNorm stays in eval mode
(frozen running statistics) so the fine-tuned network folds and exports like the shipped one.

Loss: train.py's (class-weighted cross-entropy + 0.5 soft Dice) on train.py's data and
augmentation; with `--distill A`, (1 - A) x that + A x KL(shipped FP32 || fake-quantized network),
which keeps the fine-tune close to the FP32 model the gate compares against (without it, 275 steps
on 128-pixel crops moved FP32 superficial Dice by -3 points: bench/results/int8_recipes_cpu.json).

    python3 bench/int8_qat.py --out /tmp/qat --frames 3200 --steps 1000 --batch-size 8 --crop 0 --lr 3e-5 --distill 0.9
        --max-train-minutes 17
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from holoburn.clinical.errors import BadInput

QMAX = 127  # symmetric int8 with zero point 0: scale = amax / 127, as ONNX Runtime computes it for TensorRT
QMIN_ACTIVATION = -128  # QuantizeLinear saturates int8 activations at -128 (weights are quantized within -127..127)
GRID_MARK = "_holoburn_on_int8_grid"  # attribute on tensors that already went through a Q/DQ


class QATError(BadInput):
    """A QAT setting or the model to fine-tune is unusable."""


# ----------------------------------------------------------------------------- fake quantization


def fake_quant_per_tensor(x, amax: float):
    """Symmetric int8 quantize-dequantize of `x` with scale amax / 127, zero point 0, saturating at
    -128..127 as QuantizeLinear does (straight-through gradient inside that range)."""
    import torch

    scale = max(float(amax), 1e-12) / QMAX
    return torch.fake_quantize_per_tensor_affine(x, scale, 0, QMIN_ACTIVATION, QMAX)


def fake_quant_per_channel(weight, axis: int):
    """Symmetric int8 quantize-dequantize of a weight per channel along `axis` (scale = max|w| / 127)."""
    import torch

    dims = [d for d in range(weight.dim()) if d != axis]
    amax = weight.detach().abs().amax(dim=dims)
    scale = (amax / QMAX).clamp(min=1e-12).float()
    zero = torch.zeros(weight.shape[axis], dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, axis, -QMAX, QMAX)


def percentile_amax(x, percentile: float) -> float:
    """The `percentile` (0..100) of |x| over all elements: the value the k-th largest |x| takes,
    k = the share above the percentile (at least 1); topk keeps it cheap for large tensors."""
    flat = x.detach().abs().reshape(-1)
    k = max(1, int(math.ceil(round(flat.numel() * (1.0 - percentile / 100.0), 6))))
    k = min(k, flat.numel())
    return float(flat.topk(k).values[-1])


def _activation_quantizer_class():
    import torch
    from torch import nn

    class ActivationFakeQuant(nn.Module):
        """Per-tensor symmetric int8 fake quantization with a calibrated, EMA-updated amax.

        mode "calibrate": record the batch percentile (averaged over batches), pass x through;
        "train": EMA-update amax from the batch percentile and fake-quantize (optionally with a
        jittered scale); "frozen": fake-quantize with the stored amax; "off": pass x through.
        """

        def __init__(self, name: str, percentile: float, momentum: float = 0.99, scale_jitter: float = 0.0):
            super().__init__()
            self.name = name
            self.percentile = percentile
            self.momentum = momentum
            self.scale_jitter = scale_jitter
            self.mode = "calibrate"
            self.register_buffer("amax", torch.zeros(()))
            self.register_buffer("batches", torch.zeros((), dtype=torch.long))

        def forward(self, x):
            if self.mode == "off":
                return x
            if self.mode == "calibrate":
                found = percentile_amax(x, self.percentile)
                n = int(self.batches)
                self.amax.fill_((float(self.amax) * n + found) / (n + 1))
                self.batches += 1
                return x
            if self.mode == "train":
                found = percentile_amax(x, self.percentile)
                self.amax.fill_(self.momentum * float(self.amax) + (1 - self.momentum) * found)
                amax = float(self.amax)
                if self.scale_jitter:
                    amax *= math.exp(float(torch.empty(()).uniform_(-self.scale_jitter, self.scale_jitter)))
                return fake_quant_per_tensor(x, amax)
            return fake_quant_per_tensor(x, float(self.amax))

        def extra_repr(self) -> str:
            return f"{self.name}, amax={float(self.amax):.5g}, mode={self.mode}"

    return ActivationFakeQuant


def _weight_quantizer_class():
    from torch import nn

    class WeightFakeQuant(nn.Module):
        """Parametrization: the weight as int8 per channel along `axis` would dequantize it."""

        def __init__(self, axis: int):
            super().__init__()
            self.axis = axis
            self.enabled = True

        def forward(self, weight):
            return fake_quant_per_channel(weight, self.axis) if self.enabled else weight

    return WeightFakeQuant


# ----------------------------------------------------------------------------- the QAT wrapper


def onnx_node_name(module_path: str, module) -> str:
    """The node name torch.onnx (TorchScript exporter) gives a module's convolution:
    "enc1.0" -> "/enc1/enc1.0/Conv", "up4" -> "/up4/ConvTranspose"."""
    from torch import nn

    parts = module_path.split(".")
    scopes = [".".join(parts[: i + 1]) for i in range(len(parts))]
    op = "ConvTranspose" if isinstance(module, nn.ConvTranspose2d) else "Conv"
    return "/" + "/".join(scopes) + "/" + op


def float_modules(model, patterns) -> list[str]:
    """Module paths of the convolutions that `patterns` (card sensitive_layers: ONNX node names or
    shell patterns) keep in float. A pattern that matches no convolution is an error."""
    from torch import nn

    convs = {path: m for path, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}
    names = {path: onnx_node_name(path, m) for path, m in convs.items()}
    kept = []
    for pattern in patterns:
        hits = [path for path, name in names.items() if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            raise QATError(f"sensitive layer {pattern!r} names no convolution of the network (they are {sorted(names.values())})")
        kept += [h for h in hits if h not in kept]
    return kept


class QATModel:
    """Fake quantization attached to a BurnUNet (any net of Conv/BN/ReLU Sequentials, pools,
    transposed convolutions and concatenations) with hooks and weight parametrizations; the
    network itself keeps its class and state-dict keys. `strip()` removes every trace.

    float_layers: module paths kept in float. quantize_conv_outputs: the recipe's option.
    """

    def __init__(self, model, float_layers=(), *, percentile: float = 99.999, quantize_conv_outputs: bool = True,
                 momentum: float = 0.99, scale_jitter: float = 0.0):
        import torch
        from torch import nn
        from torch.nn.utils import parametrize

        self.model = model
        self.float_layers = list(float_layers)
        self.quantize_conv_outputs = quantize_conv_outputs
        Act, Weight = _activation_quantizer_class(), _weight_quantizer_class()
        self.activations: dict[str, nn.Module] = {}
        self.weights: dict[str, nn.Module] = {}
        self._handles = []
        self._input_on_grid: dict[str, bool] = {}  # per quantized conv, learnt in the first (calibration) pass

        modules = dict(model.named_modules())
        convs = [p for p, m in modules.items() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        unknown = [p for p in self.float_layers if p not in convs]
        if unknown:
            raise QATError(f"float layers {unknown} are not convolutions of the network")
        quantized = [p for p in convs if p not in self.float_layers]

        def mark(t):
            setattr(t, GRID_MARK, True)
            return t

        def output_point(path: str):
            """The module whose output is the convolution's output as ONNX sees it (BN folded)."""
            parent, _, index = path.rpartition(".")
            container = modules.get(parent)
            if isinstance(container, nn.Sequential) and index.isdigit() and int(index) + 1 < len(container) \
                    and isinstance(container[int(index) + 1], nn.BatchNorm2d):
                return f"{parent}.{int(index) + 1}"
            return path

        for path in quantized:
            conv = modules[path]
            axis = 1 if isinstance(conv, nn.ConvTranspose2d) else 0
            weight_fq = Weight(axis)
            parametrize.register_parametrization(conv, "weight", weight_fq)
            self.weights[path] = weight_fq

            input_fq = Act(f"{path}:input", percentile, momentum, scale_jitter)
            self.activations[input_fq.name] = input_fq

            def pre_hook(module, args, path=path, fq=input_fq):
                x = args[0]
                if self.quantize_conv_outputs:
                    if path not in self._input_on_grid:
                        self._input_on_grid[path] = bool(getattr(x, GRID_MARK, False))
                    if self._input_on_grid[path]:
                        return None
                return (mark(fq(x)),) + tuple(args[1:])

            self._handles.append(conv.register_forward_pre_hook(pre_hook))

            if quantize_conv_outputs:
                out_fq = Act(f"{path}:output", percentile, momentum, scale_jitter)
                self.activations[out_fq.name] = out_fq

                def post_hook(module, args, output, fq=out_fq):
                    return mark(fq(output))

                self._handles.append(modules[output_point(path)].register_forward_hook(post_hook))

        if quantize_conv_outputs:
            # ReLU and MaxPool keep their input's scale: their output stays on the grid
            def keep_mark(module, args, output):
                if getattr(args[0], GRID_MARK, False):
                    mark(output)
                return output

            for m in modules.values():
                if isinstance(m, (nn.ReLU, nn.MaxPool2d)):
                    self._handles.append(m.register_forward_hook(keep_mark))
        self._torch = torch

    # -- modes
    def set_mode(self, mode: str) -> None:
        if mode not in ("calibrate", "train", "frozen", "off"):
            raise QATError(f"unknown fake-quant mode {mode!r}")
        for fq in self.activations.values():
            fq.mode = mode
        for wq in self.weights.values():
            wq.enabled = mode != "off"

    def used_activations(self) -> dict[str, float]:
        """The activation quantizers that calibration saw in use (name -> amax)."""
        return {name: float(fq.amax) for name, fq in self.activations.items() if int(fq.batches) > 0}

    def calibrate(self, batches) -> dict[str, float]:
        """Run float batches (N, 3, S, S) through the network to set every activation amax."""
        self.set_mode("calibrate")
        self.model.eval()
        with self._torch.no_grad():
            for x in batches:
                self.model(x)
        return self.used_activations()

    def strip(self):
        """Remove hooks and weight parametrizations (raw float weights kept); returns the plain network."""
        from torch.nn.utils import parametrize

        for handle in self._handles:
            handle.remove()
        self._handles = []
        for path, _ in list(self.weights.items()):
            module = dict(self.model.named_modules())[path]
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        self.weights = {}
        return self.model


def freeze_batch_norm(model) -> None:
    """Eval mode everywhere (BurnUNet has no dropout): BatchNorm uses and keeps its running statistics."""
    model.eval()


def distillation_loss(student_logits, teacher_logits, valid):
    """Mean KL(teacher || student) of the class softmax over the valid (non-padding) pixels."""
    log_p = teacher_logits.log_softmax(1)
    kl = (log_p.exp() * (log_p - student_logits.log_softmax(1))).sum(1)
    return (kl * valid).sum() / valid.sum().clamp(min=1)


def qat_step(qat: QATModel, optimizer, x, y, criterion, dice_weight: float = 0.5, teacher=None, distill: float = 0.0) -> float:
    """One fine-tuning step with fake quantization; BatchNorm frozen. Returns the loss.

    Loss: train.py's (class-weighted cross-entropy + dice_weight x soft Dice); with a teacher (the
    float network QAT starts from) and distill in 0..1: (1 - distill) x that + distill x
    KL(teacher || student), so the quantized network learns to answer as the validated FP32 does."""
    import torch

    from holoburn.app.training.train import IGNORE, _dice_loss

    freeze_batch_norm(qat.model)
    logits = qat.model(x)
    loss = criterion(logits, y) + dice_weight * _dice_loss(logits, y, logits.shape[1])
    if teacher is not None and distill > 0:
        with torch.no_grad():
            target = teacher(x)
        loss = (1 - distill) * loss + distill * distillation_loss(logits, target, (y != IGNORE).float())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


# ----------------------------------------------------------------------------- fine-tuning run


def run_qat(out_dir, *, frames: int = 3200, seed: int = 1, size=(640, 480), frames_per_scene: int = 8, steps: int = 600,
            batch_size: int = 8, crop: int | None = 128, lr: float = 5e-5, calibration_batches: int = 8, scale_jitter: float = 0.1,
            momentum: float = 0.99, distill: float = 0.0, threads: int = 2, time_limit_minutes: float | None = None, data: str | None = None,
            card_path=None, command: str = "", progress=print) -> dict:
    """Fine-tune the card's network with fake quantization; write `<model_id>_qat.onnx`, `.pt` and a
    JSON summary to out_dir. Training frames: train.py's `make_training_set` (the shipped model's
    data recipe: seed 1, its scene families and codecs), the first `frames` of it, or a saved .npz."""
    import torch

    from holoburn.app.training.train import (IGNORE, _augment, _normalise, class_weights, export_onnx,
                                             make_training_set)
    from holoburn.engines.card import DEFAULT_CARD, load_card
    from holoburn.engines.quantize import load_strategy
    from holoburn.engines.unet import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    card = load_card(card_path or DEFAULT_CARD)
    strategy = load_strategy()
    if not 0 <= distill <= 1:
        raise QATError(f"distill {distill}: the share of the loss given to the teacher must be within 0..1")
    if not 0 < lr < 1e-2 or steps < 1 or batch_size < 1:
        raise QATError(f"lr {lr}, steps {steps}, batch size {batch_size}: need 0 < lr < 1e-2 and positive steps and batch")
    started = time.perf_counter()
    log_lines = []

    def say(message: str):
        line = f"[{time.perf_counter() - started:7.1f}s] {message}"
        log_lines.append(line)
        progress(line)

    if data:
        loaded = np.load(data)
        images, labels = loaded["images"][:frames], loaded["labels"][:frames]
        say(f"training frames: {len(images)} from {data}")
    else:
        images, labels = make_training_set(frames, seed, size, frames_per_scene, card.input_size, workers=threads)
        say(f"training frames: {len(images)} (make_training_set seed {seed}, {frames_per_scene} per scene)")
    num_classes = card.num_classes
    _, weights = class_weights(labels, num_classes)

    try:
        widths, state_path = tuple(card.raw["architecture"]["widths"]), card.sibling(card.raw["torch_state_dict"])
    except (KeyError, TypeError) as exc:
        raise QATError(f"card {card.path} names no BurnUNet widths or torch_state_dict ({exc})") from None
    model = build_model(num_classes=num_classes, widths=widths)
    model.load_state_dict(torch.load(state_path, map_location="cpu"))
    bn_before = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    teacher = None
    if distill > 0:  # the shipped FP32 network, frozen: what the INT8 model is judged against
        teacher = build_model(num_classes=num_classes, widths=widths)
        teacher.load_state_dict(torch.load(state_path, map_location="cpu"))
        teacher.eval().requires_grad_(False)
    kept = float_modules(model, card.sensitive_layers)
    qat = QATModel(model, kept, percentile=strategy.percentile, quantize_conv_outputs=strategy.quantize_conv_outputs,
                   momentum=momentum, scale_jitter=scale_jitter)
    say(f"float layers {kept}; {len(qat.weights)} quantized convolutions; recipe percentile {strategy.percentile}, "
        f"quantize_conv_outputs {strategy.quantize_conv_outputs}")

    generator = torch.Generator().manual_seed(seed)
    images_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels)

    def batch(indices, crop_side: int | None = None):
        """train.py's augmentation and normalisation; then, for training steps, one random
        crop_side x crop_side window of the whole batch (CPU time: the loss sees a crop, the
        network is fully convolutional and BatchNorm is frozen)."""
        x, y, valid = _augment(images_t[indices], labels_t[indices], generator)
        x = _normalise(x, valid)
        if crop_side and crop_side < x.shape[-1]:
            if crop_side % 16:
                raise QATError(f"crop {crop_side} is not a multiple of 16 (four 2x poolings)")
            top, left = (int(v) for v in torch.randint(0, x.shape[-1] - crop_side + 1, (2,), generator=generator))
            x, y = x[..., top : top + crop_side, left : left + crop_side], y[..., top : top + crop_side, left : left + crop_side]
        return x.contiguous(), y.contiguous()

    calib = [batch(torch.randint(0, len(images), (batch_size,), generator=generator))[0] for _ in range(calibration_batches)]
    amax = qat.calibrate(calib)
    say(f"calibrated {len(amax)} activation quantizers on {calibration_batches} x {batch_size} training frames")

    criterion = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32), ignore_index=IGNORE)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    warm = max(1, steps // 20)
    horizon = {"steps": steps}

    def factor(step):
        if step < warm:
            return 0.1 + 0.9 * step / warm
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, horizon["steps"] - warm))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    qat.set_mode("train")
    losses = []
    order = torch.randperm(len(images), generator=generator)
    at = 0
    step = 0
    train_started = time.perf_counter()
    while step < horizon["steps"]:
        if at + batch_size > len(order):
            order, at = torch.randperm(len(images), generator=generator), 0
        x, y = batch(order[at : at + batch_size], crop)
        at += batch_size
        losses.append(qat_step(qat, optimizer, x, y, criterion, teacher=teacher, distill=distill))
        scheduler.step()
        step += 1
        elapsed = time.perf_counter() - train_started
        if step in (10, 50, 100, 200, 400) and time_limit_minutes:  # the pace of a shared CPU changes: look again
            fits = max(step + 10, min(steps, int(time_limit_minutes * 60 / (elapsed / step))))
            if fits != horizon["steps"]:
                horizon["steps"] = fits
                say(f"time limit {time_limit_minutes} min: {horizon['steps']} steps (asked {steps})")
        if step % 25 == 0 or step == horizon["steps"]:
            say(f"step {step}/{horizon['steps']} loss (last 25) {np.mean(losses[-25:]):.4f} lr {scheduler.get_last_lr()[0]:.2e} "
                f"{elapsed:.0f}s ({step * batch_size / elapsed:.1f} images/s)")
            torch.save(model.state_dict(), out / f"{card.model_id}_qat_partial.pt")
    train_seconds = time.perf_counter() - train_started
    final_amax = {name: round(v, 6) for name, v in qat.used_activations().items()}

    plain = qat.strip()
    bn_after = {k: v for k, v in plain.state_dict().items() if "running_" in k}
    bn_unchanged = all(torch.equal(bn_before[k], bn_after[k]) for k in bn_before)
    state = {k: v.contiguous() for k, v in plain.state_dict().items()}
    torch.save(state, out / f"{card.model_id}_qat.pt")
    onnx_path = out / f"{card.model_id}_qat.onnx"
    check = export_onnx(plain, onnx_path, card.input_size)
    say(f"ONNX written {onnx_path}; onnxruntime vs torch {check['max_abs_diff_vs_torch']}; BatchNorm statistics unchanged: {bn_unchanged}")
    summary = {
        "command": command,
        "source": str(card.onnx_path),
        "onnx": str(onnx_path),
        "frames": int(len(images)),
        "steps": step,
        "batch_size": batch_size,
        "crop": crop,
        "lr": lr,
        "schedule": f"{warm} warm-up steps then cosine to 5 % of lr",
        "optimizer": "AdamW (weight decay 1e-4)",
        "loss": "class-weighted cross-entropy + 0.5 soft Dice (train.py); letterbox padding ignored"
                + (f"; mixed {1 - distill:g} : {distill:g} with KL(shipped FP32 teacher || student)" if distill > 0 else ""),
        "augmentation": "train.py _augment",
        "fake_quant": {"activations": "per tensor symmetric int8, scale amax/127, saturating at -128..127",
                       "weights": "per output channel symmetric int8 (-127..127)",
                       "percentile": strategy.percentile, "ema_momentum": momentum, "scale_jitter": scale_jitter,
                       "quantize_conv_outputs": strategy.quantize_conv_outputs, "float_layers": kept,
                       "calibration": f"{calibration_batches} x {batch_size} augmented training frames"},
        "batch_norm_statistics_unchanged": bn_unchanged,
        "train_seconds": round(train_seconds, 1),
        "loss_first_25": round(float(np.mean(losses[:25])), 4),
        "loss_last_25": round(float(np.mean(losses[-25:])), 4),
        "amax_calibrated": {k: round(v, 6) for k, v in amax.items()},
        "amax_final": final_amax,
        "export": check,
        "torch_threads": threads,
        "log": log_lines,
    }
    (out / f"{card.model_id}_qat.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 bench/int8_qat.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (not engines/models: the shipped model stays as it is)")
    parser.add_argument("--data", default=None, help="a .npz of images (N,3,S,S) uint8 and labels (N,S,S) uint8 from make_training_set")
    parser.add_argument("--frames", type=int, default=3200)
    parser.add_argument("--seed", type=int, default=1, help="training seed (the shipped model's: 1)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128, help="train on a random CROPxCROP window of the 256 input (0: whole input)")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--scale-jitter", type=float, default=0.1, help="log-uniform jitter of activation scales per step (0: none)")
    parser.add_argument("--momentum", type=float, default=0.99, help="EMA momentum of activation amax")
    parser.add_argument("--distill", type=float, default=0.0,
                        help="share 0..1 of the loss that is KL(shipped FP32 || QAT network) (0: train.py's loss only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-train-minutes", type=float, default=None)
    args = parser.parse_args(argv)
    if Path(args.out).resolve() == (Path(__file__).resolve().parents[2] / "engines" / "models").resolve():
        parser.error("--out must not be engines/models (the shipped model is not overwritten)")
    command = shlex.join(["python3", "bench/int8_qat.py", *(argv if argv is not None else sys.argv[1:])])
    run_qat(args.out, frames=args.frames, seed=args.seed, steps=args.steps, batch_size=args.batch_size, crop=args.crop or None, lr=args.lr,
            calibration_batches=args.calibration_batches, scale_jitter=args.scale_jitter, momentum=args.momentum,
            distill=args.distill, threads=args.threads, time_limit_minutes=args.max_train_minutes, data=args.data, command=command,
            progress=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
