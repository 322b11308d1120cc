"""`holoburn train --data DEST`: fine-tune the burn network on a clinic's own images.

DEST is a dataset written by `holoburn dataset import` and split by `holoburn dataset split`
(app/datasets: images/<id>.png, labels/<id>.png, dataset.json, splits.json). The network starts
from the shipped model (`--init shipped`, the default) or from random weights (`--init none`);
it trains on the train split with the batch augmentations of the synthetic recipe (flips, quarter
turns, zoom/rotation/shift, colour, noise), keeps the epoch with the best validation any-burn Dice,
stops early when that has not improved for `patience` epochs, and can resume from its last
checkpoint after a kill (`--resume`): model, optimiser, learning-rate schedule and random streams
are restored, so a resumed run takes the same steps as one that was never stopped.

Labels: 0-5 are holoburn's classes, 255 unknown (no loss), 6 burn of unknown depth: its loss is
-log P(any burn depth), so a burn / no-burn dataset teaches where burns are without a depth target.

Writes to OUT: `<model_id>.onnx`, `<model_id>.pt`, the card `<model_id>.yaml` (data fingerprint,
split, command, per-class Dice on the test split with 95 % bootstrap intervals over images, the
out-of-domain threshold recalibrated on the validation split), `<model_id>_train.log`, and
`<model_id>_checkpoint.pt` while training.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from holoburn.app.training.train import (
    IGNORE,
    MEAN_RGB,
    OPSET,
    STD_RGB,
    _augment,
    _dice_loss,
    _letterbox_pair,
    _normalise,
    _resolve_device,
    count_parameters,
    export_onnx,
    predict_masks,
    training_log,
)
from holoburn.clinical.depth import BURN_CLASSES, CLASS_COLOURS_RGB, CLASS_NAMES, NUM_CLASSES
from holoburn.clinical.errors import BadInput
from holoburn.clinical.metrics import confusion_matrix, dice_summary
from holoburn.engines.unet import WIDTHS, build_model

BURN_UNSPECIFIED = 6  # app.datasets.labels: burn of some depth, depth not given
BOOTSTRAP = 500


# ----------------------------------------------------------------------------- data


def read_dataset(dest: Path) -> tuple[dict, dict]:
    """(dataset.json, splits.json) of an imported and split dataset, the split checked against it."""
    splits_path = dest / "splits.json"
    if not (dest / "dataset.json").is_file():
        raise BadInput(f"{dest} is not a holoburn dataset (no dataset.json): run `holoburn dataset import` first")
    if not splits_path.is_file():
        raise BadInput(f"{dest} has no splits.json: run `holoburn dataset split {dest} --seed 1` first")
    splits = json.loads(splits_path.read_text())
    info = json.loads((dest / "dataset.json").read_text())
    if splits.get("dataset_fingerprint") != info.get("fingerprint", {}).get("sha256"):
        raise BadInput(f"{splits_path} was made for another version of {dest}: split it again")
    return info, splits


def read_split(dest: Path, ids: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(RGB images, label masks) of one split's image ids."""
    images, labels = [], []
    for image_id in ids:
        bgr = cv2.imread(str(dest / "images" / f"{image_id}.png"), cv2.IMREAD_COLOR)
        label = cv2.imread(str(dest / "labels" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
        if bgr is None or label is None or label.shape != bgr.shape[:2]:
            raise BadInput(f"{dest}: image {image_id} or its label cannot be read or differ in size; import again")
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        labels.append(label)
    return images, labels


def letterboxed(images, labels, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, S, S) uint8 and (N, S, S) uint8 labels (padding IGNORE), as the pipeline sees them."""
    x = np.empty((len(images), 3, input_size, input_size), np.uint8)
    y = np.empty((len(images), input_size, input_size), np.uint8)
    for i, (image, label) in enumerate(zip(images, labels)):
        x[i], y[i] = _letterbox_pair(image, label, input_size)
    return x, y


# ----------------------------------------------------------------------------- loss and scores


def partial_label_loss(logits, labels):
    """Cross-entropy on known classes, -log P(any burn) on burn of unknown depth, nothing on
    unknown pixels; plus 0.5 soft Dice over the known classes."""
    import torch

    logp = torch.log_softmax(logits.float(), 1)
    known = labels < NUM_CLASSES
    burn = labels == BURN_UNSPECIFIED
    target = torch.where(known, labels, torch.full_like(labels, IGNORE))
    total = torch.nn.functional.nll_loss(logp, target, ignore_index=IGNORE, reduction="sum")
    if burn.any():
        total = total - torch.logsumexp(logp[:, list(BURN_CLASSES)], 1)[burn].sum()
    count = (known.sum() + burn.sum()).clamp(min=1)
    return total / count + 0.5 * _dice_loss(logits, target, NUM_CLASSES)


def frame_confusions(predicted: list[np.ndarray], truths: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the confusion over known pixels (N, C, C), and burn counts (N, 3): true
    positives, false positives and false negatives of any burn, burn of unknown depth included."""
    confusions = np.zeros((len(truths), NUM_CLASSES, NUM_CLASSES), np.int64)
    burn = np.zeros((len(truths), 3), np.int64)
    for i, (pred, truth) in enumerate(zip(predicted, truths)):
        known = truth < NUM_CLASSES
        confusions[i] = confusion_matrix(truth[known], pred[known])
        counted = known | (truth == BURN_UNSPECIFIED)
        is_burn = np.isin(truth, (*BURN_CLASSES, BURN_UNSPECIFIED))[counted]
        said = np.isin(pred[counted], BURN_CLASSES)
        burn[i] = (np.sum(is_burn & said), np.sum(~is_burn & said), np.sum(is_burn & ~said))
    return confusions, burn


def scores(confusions: np.ndarray, burn: np.ndarray) -> dict:
    """Dice of the known pixels; any-burn Dice with burn of unknown depth counted as burn."""
    tp, fp, fn = burn.sum(0)
    return {**dice_summary(confusions.sum(0)),
            "any_burn_dice": float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else None}


def with_intervals(confusions: np.ndarray, burn: np.ndarray, seed: int = 0) -> dict:
    """Scores and 95 % bootstrap intervals over images (resampled with replacement)."""
    point = scores(confusions, burn)
    rng = np.random.default_rng(seed)
    draws = [scores(confusions[idx], burn[idx]) for idx in rng.integers(0, len(burn), (BOOTSTRAP, len(burn)))]

    def interval(get):
        values = [v for v in (get(d) for d in draws) if v is not None]
        return [round(float(np.percentile(values, 2.5)), 4), round(float(np.percentile(values, 97.5)), 4)] if values else None

    point["any_burn_dice_ci95"] = interval(lambda d: d["any_burn_dice"])
    point["mean_depth_dice_ci95"] = interval(lambda d: d["mean_depth_dice"])
    point["dice_ci95"] = {name: interval(lambda d, n=name: d["dice"][n]) for name in CLASS_NAMES}
    point["images"] = int(len(burn))
    return point


# ----------------------------------------------------------------------------- training


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = int(width * done / max(1, total))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def finetune(
    data_dir,
    out_dir,
    *,
    init: str = "shipped",
    epochs: int = 30,
    batch_size: int = 8,
    lr: float = 1e-3,
    input_size: int = 256,
    device: str = "auto",
    patience: int = 6,
    seed: int = 1,
    model_id: str = "burn_unet_finetuned",
    resume: bool = False,
    stop_after_epochs: int | None = None,
    command: str = "",
    progress: Callable[[str], None] = print,
) -> dict:
    """Fine-tune on DEST's train split; returns the card as a dict (see the module docstring).
    stop_after_epochs: end the process's work after this many epochs of this call, as a kill
    would (the checkpoint stays; for tests of `resume`)."""
    import torch
    import yaml

    from holoburn.engines.card import DEFAULT_CARD, file_sha256, load_card

    data, out = Path(data_dir), Path(out_dir)
    if init not in ("shipped", "none"):
        raise BadInput(f"--init must be shipped or none, got {init!r}")
    info, splits = read_dataset(data)
    train_images, train_labels = read_split(data, splits.get("train") or [])
    val_images, val_labels = read_split(data, splits.get("validation") or [])
    test_images, test_labels = read_split(data, splits.get("test") or [])
    if not train_images or not val_images:
        raise BadInput(f"{data}: the train and validation splits need images (train {len(train_images)}, "
                       f"validation {len(val_images)}); split with other fractions or import more cases")
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / f"{model_id}_checkpoint.pt"
    say, log_file = training_log(out / f"{model_id}_train.log", "a" if resume else "w", progress)
    started = time.perf_counter()

    dev = _resolve_device(device)
    torch.manual_seed(seed)
    model = build_model().to(dev)
    shipped = load_card(DEFAULT_CARD)
    # the shipped weights: the start (--init shipped), and what the test split compares against
    shipped_state = torch.load(shipped.path.parent / shipped.raw["torch_state_dict"], map_location="cpu")
    if init == "shipped":
        model.load_state_dict(shipped_state)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = max(1, math.ceil(len(train_images) / batch_size))
    total_steps = epochs * steps_per_epoch

    def lr_factor(step: int) -> float:  # short warm-up, cosine decay
        warm = max(1, int(0.05 * total_steps))
        if step < warm:
            return 0.1 + 0.9 * step / warm
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(seed)
    epoch, best, best_epoch, bad_epochs, best_state = 0, -1.0, 0, 0, None
    if resume:
        if not checkpoint_path.is_file():
            raise BadInput(f"--resume: no checkpoint {checkpoint_path}; start without --resume")
        saved = torch.load(checkpoint_path, map_location=dev, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        epoch, best, best_epoch, bad_epochs = saved["epoch"], saved["best"], saved["best_epoch"], saved["bad_epochs"]
        best_state = saved["best_state"]
        say(f"resumed from {checkpoint_path.name} after epoch {epoch}")
    else:
        say(f"device {dev}; {len(train_images)} train, {len(val_images)} validation, {len(test_images)} test images; "
            f"init {init}; BurnUNet {count_parameters(model):,} parameters")

    x_all, y_all = letterboxed(train_images, train_labels, input_size)
    images_t, labels_t = torch.from_numpy(x_all).to(dev), torch.from_numpy(y_all).to(dev)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)

    def predict(batch: np.ndarray):
        model.eval()
        with torch.no_grad(), autocast:
            return model(torch.from_numpy(batch).to(dev)).float().cpu().numpy()

    this_call = 0
    while epoch < epochs and bad_epochs < patience:
        model.train()
        order = torch.randperm(len(train_images), generator=generator).to(dev)
        loss_sum = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            x, y, valid = _augment(images_t[idx], labels_t[idx], generator)
            with autocast:
                logits = model(_normalise(x, valid))
            loss = partial_label_loss(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach())
        epoch += 1
        this_call += 1
        val = scores(*frame_confusions(predict_masks(predict, val_images, input_size), val_labels))
        score = val["any_burn_dice"] if val["any_burn_dice"] is not None else 0.0
        if score > best:
            best, best_epoch, bad_epochs = score, epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        say(f"{_bar(epoch, epochs)} epoch {epoch}/{epochs} loss {loss_sum / steps_per_epoch:.4f} | validation "
            f"any-burn Dice {score:.3f}, depth {val['mean_depth_dice'] if val['mean_depth_dice'] is not None else float('nan'):.3f}"
            f" | best {best:.3f} (epoch {best_epoch})")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "epoch": epoch,
                    "best": best, "best_epoch": best_epoch, "bad_epochs": bad_epochs, "best_state": best_state},
                   checkpoint_path)
        if stop_after_epochs is not None and this_call >= stop_after_epochs and epoch < epochs:
            say(f"stopped after epoch {epoch}: resume with --resume")
            log_file.close()
            return {}
    if bad_epochs >= patience:
        say(f"early stop: validation any-burn Dice has not improved for {patience} epochs")

    model.load_state_dict(best_state)
    model = model.to("cpu").float()
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, out / f"{model_id}.pt")
    onnx_path = out / f"{model_id}.onnx"
    check = export_onnx(model, onnx_path, input_size)

    def on_cpu(net):
        net.eval()

        def run(batch):
            with torch.no_grad():
                return net(torch.from_numpy(batch)).numpy()
        return run

    test = shipped_test = None
    if test_images:  # and the model it started from, on the same test split: what fine-tuning gained
        test = with_intervals(*frame_confusions(predict_masks(on_cpu(model), test_images, input_size), test_labels))
        base = build_model()
        base.load_state_dict(shipped_state)
        shipped_test = scores(*frame_confusions(predict_masks(on_cpu(base), test_images, input_size), test_labels))
    card = {
        "model_id": model_id,
        "onnx": onnx_path.name,
        "sha256": file_sha256(onnx_path),
        "torch_state_dict": f"{model_id}.pt",
        "architecture": {"name": "BurnUNet", "builder": "holoburn.engines.unet.build_model", "widths": list(WIDTHS),
                         "parameters": count_parameters(model)},
        "input": {**shipped.raw["input"], "size": input_size},
        "output": shipped.raw["output"],
        "classes": list(CLASS_NAMES),
        "colours_rgb": CLASS_COLOURS_RGB.tolist(),
        "normalisation": {"mean": list(MEAN_RGB), "std": list(STD_RGB), "units": "0..255"},
        "training": {
            "data": "holoburn dataset (images/, labels/, dataset.json)",
            "dataset_fingerprint": info.get("fingerprint", {}).get("sha256"),
            "split": {"seed": splits.get("seed"), "fractions": splits.get("fractions"),
                      "images": {name: len(splits.get(name) or []) for name in ("train", "validation", "test")}},
            "init": init if init == "none" else f"shipped ({shipped.model_id})",
            "epochs_planned": epochs,
            "epochs_completed": epoch,
            "best_epoch": best_epoch,
            "batch": batch_size,
            "lr": lr,
            "patience": patience,
            "loss": "cross-entropy on known classes, -log P(any burn) on burn of unknown depth, + 0.5 soft Dice",
            "augmentation": "flips, quarter turns, zoom/rotate/shift, colour jitter, noise",
            "device": str(_resolve_device(device)),
            "torch_version": str(torch.__version__),
            "seconds": round(time.perf_counter() - started, 1),
            "command": command,
        },
        "validation": {"best_any_burn_dice": round(best, 4), "images": len(val_images)},
        "test": test,
        "test_of_the_initial_model": shipped_test,
        "export": {"opset": OPSET, "onnxruntime_vs_torch_max_abs_diff": check["max_abs_diff_vs_torch"]},
        "sensitive_layers": [check["first_conv"], check["last_conv"]],
        "demonstration": False,
        "intended_use": "Fine-tuned on a clinic's own images; decision support, not a diagnosis. Validate it on "
                        "your own held-out patients before any use.",
    }
    card_path = out / f"{model_id}.yaml"
    card_path.write_text(yaml.safe_dump(card, sort_keys=False, width=100, default_flow_style=None))
    card["assessability"] = calibrate_threshold(card_path, val_images)
    card_path.write_text(yaml.safe_dump(card, sort_keys=False, width=100, default_flow_style=None))
    if test:
        say(f"test split ({len(test_images)} images): any-burn Dice {test['any_burn_dice']:.3f} "
            f"{test['any_burn_dice_ci95']}, mean depth Dice {test['mean_depth_dice']}; the initial model "
            f"{shipped_test['any_burn_dice']:.3f}")
    say(f"card written: {card_path}")
    checkpoint_path.unlink(missing_ok=True)
    log_file.close()
    return card


def calibrate_threshold(card_path: Path, images, pass_share: float = 0.98) -> dict:
    """The out-of-domain threshold recalibrated on the validation images (trust.calibrate)."""
    from holoburn.app.training.trust import calibrate
    from holoburn.engines.card import load_card

    threshold, values = calibrate(load_card(card_path), images, pass_share)
    return {"min_skin_confidence": None if threshold is None else round(threshold, 4),
            "calibration": {"data": f"the validation split, {len(images)} images", "pass_share": pass_share,
                            "images_with_skin": len(values)}}
