"""Training recipe for the shipped demonstration model: a small U-Net on `holoburn synth` scenes.

One call, `train(...)`, draws the training scenes, trains, measures the model on held-out scenes
that went through a real mp4 encode/decode (as the pipeline sees them), exports ONNX, and writes
the model card beside it. PyTorch is an optional extra (`pip install holoburn[train]`), so it is
imported inside the functions that need it.

Model input is what `holoburn.processing.preprocess.prepare_input` makes of a frame: the frame
letterboxed into an S x S square, RGB, normalised with the card's mean and std, NCHW float32.
The padding of the letterbox is left out of the loss (ignore index): the pipeline crops it away
in `restore_mask`, so whatever the model says there is never read, and counting it as
background would only reward the model for finding the padding.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from holoburn.app.synthesis import photos, synth
from holoburn.clinical.depth import CLASS_COLOURS_RGB, CLASS_NAMES, NUM_CLASSES
from holoburn.clinical.metrics import confusion_matrix, dice_summary
from holoburn.processing.preprocess import prepare_input, restore_mask
from holoburn.engines.unet import WIDTHS, build_model
from holoburn.media.video import VideoReader  # the architecture lives below app/ for the torch backend

MODEL_ID = "burn_unet_v2"
#: per-channel RGB normalisation, 0..255 units (the usual ImageNet statistics)
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)
MULTIPLE_OF = 16  # four 2x poolings
IGNORE = 255  # label of letterbox padding: left out of loss and metrics
INPUT_NAME = "frames"
OUTPUT_NAME = "logits"
OPSET = 17
#: share of training scenes per scene family (synth.FAMILIES); "contact" never trains: it is held out
TRAINING_MIX = {"clinic": 0.15, "varied": 0.70, "no_skin": 0.15}
#: held-out families scored after training, frames each (the first is the card's headline held-out set)
HELDOUT_FAMILIES = {"varied": 1.0, "contact": 1 / 3, "clinic": 1 / 3}


# ----------------------------------------------------------------------------- model


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- data


def _letterbox_pair(frame, mask, input_size: int):
    """Frame and mask -> (3, S, S) uint8 letterboxed RGB (padding 0) and (S, S) uint8 labels (padding IGNORE).

    The image goes through `prepare_input` itself (with mean 0 and std 1, which leaves the pixel
    values as they are), so training sees exactly the resampling the pipeline does.
    """
    square, box = prepare_input(frame, input_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    image = square[0].astype(np.uint8)
    labels = np.full((input_size, input_size), IGNORE, np.uint8)
    labels[box.top : box.top + box.height, box.left : box.left + box.width] = cv2.resize(
        mask, (box.width, box.height), interpolation=cv2.INTER_NEAREST
    )
    return image, labels


def _mp4_round_trip(frames: list[np.ndarray], fps: float = 30.0) -> list[np.ndarray]:
    """Encode RGB frames with OpenCV's 'mp4v' and decode them again (the pipeline's input path)."""
    height, width = frames[0].shape[:2]
    fd, path = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        capture = cv2.VideoCapture(path)
        decoded = []
        while len(decoded) < len(frames):
            ok, bgr = capture.read()
            if not ok:
                break
            decoded.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        capture.release()
    finally:
        os.unlink(path)
    if len(decoded) != len(frames):  # a codec that drops frames: keep the clean ones rather than misalign
        return frames
    return decoded


def scene_family(seed: int, scene_index: int) -> str:
    """The family of training scene `scene_index` (drawn from TRAINING_MIX, its own random stream)."""
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(scene_index), 11)))
    names = list(TRAINING_MIX)
    return names[int(rng.choice(len(names), p=[TRAINING_MIX[n] for n in names]))]


def _training_chunk(job):
    """One scene's training samples: (images (n, 3, S, S) uint8, labels (n, S, S) uint8).

    Compression is part of the picture the pipeline sees: half the scenes go through a real mp4
    encode/decode, some through JPEG at a random quality, the rest stay clean. Some frames are
    cropped to another aspect ratio first, so the model also sees portrait and wide letterboxes.
    """
    seed, scene_index, count, size, input_size = job
    cv2.setNumThreads(1)
    pairs = synth.scene_frames(seed, scene_index, count, size, scene_family(seed, scene_index))
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(scene_index), 7)))
    frames = [f for f, _ in pairs]
    masks = [m for _, m in pairs]
    codec = rng.choice(["mp4", "jpeg", "none"], p=[0.5, 0.3, 0.2])
    if codec == "mp4" and frames[0].shape[0] % 2 == 0 and frames[0].shape[1] % 2 == 0:
        frames = _mp4_round_trip(frames)
    elif codec == "jpeg":
        quality = int(rng.integers(35, 96))
        frames = [
            cv2.cvtColor(
                cv2.imdecode(cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR),
                cv2.COLOR_BGR2RGB,
            )
            for f in frames
        ]
    images = np.empty((count, 3, input_size, input_size), np.uint8)
    labels = np.empty((count, input_size, input_size), np.uint8)
    for i, (frame, mask) in enumerate(zip(frames, masks)):
        if rng.random() < 0.3:
            h, w = mask.shape
            aspect = rng.choice([9 / 16, 3 / 4, 1.0, 4 / 3])  # height / width of the crop
            ch, cw = (h, min(w, int(h / aspect))) if h / w < aspect else (min(h, int(w * aspect)), w)
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            frame, mask = frame[y : y + ch, x : x + cw], mask[y : y + ch, x : x + cw]
        images[i], labels[i] = _letterbox_pair(np.ascontiguousarray(frame), np.ascontiguousarray(mask), input_size)
    return images, labels


def make_training_set(frames: int, seed: int, size, frames_per_scene: int, input_size: int, workers: int = 0, progress=None):
    """(images (N, 3, S, S) uint8, labels (N, S, S) uint8) drawn in parallel over scenes.

    The result does not depend on `workers`: each scene has its own random stream.
    """
    jobs = []
    done = 0
    while done < frames:
        count = min(frames_per_scene, frames - done)
        jobs.append((seed, len(jobs), count, tuple(size), input_size))
        done += count
    images = np.empty((frames, 3, input_size, input_size), np.uint8)
    labels = np.empty((frames, input_size, input_size), np.uint8)
    workers = workers or os.cpu_count() or 1
    at = 0

    def store(result):
        nonlocal at
        im, lb = result
        images[at : at + len(im)] = im
        labels[at : at + len(lb)] = lb
        at += len(im)
        if progress and (len(jobs) < 20 or at % max(1, frames // 10) < len(im) or at == frames):
            progress(f"data: {at}/{frames} training frames")

    if workers == 1:
        for job in jobs:
            store(_training_chunk(job))
    else:
        import multiprocessing as mp

        # spawn, not fork: the parent may already hold a CUDA context, which a forked child must not inherit
        with mp.get_context("spawn").Pool(workers) as pool:
            for result in pool.imap(_training_chunk, jobs, chunksize=max(1, len(jobs) // (workers * 8))):
                store(result)
    return images, labels


def read_heldout(directory) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames decoded from `directory/frames.mp4` (RGB) and their masks, as `generate` wrote them."""
    directory = Path(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    with VideoReader(directory / "frames.mp4") as reader:
        frames = [frame for frame, _ in reader]
    masks = [cv2.imread(str(directory / "masks" / name), cv2.IMREAD_UNCHANGED) for name in sorted(manifest["masks"]["sha256"])]
    if len(frames) != len(masks):
        raise RuntimeError(f"{directory}/frames.mp4 decoded to {len(frames)} frames but there are {len(masks)} masks")
    return frames, masks


# ----------------------------------------------------------------------------- evaluation


def predict_masks(predict: Callable, images, input_size: int, batch: int = 16) -> list[np.ndarray]:
    """Class masks at image size: `predict((N, 3, S, S) float32) -> (N, C, S, S)` logits, each image
    through `prepare_input` and the prediction through argmax and `restore_mask`, as in the pipeline."""
    masks = []
    for start in range(0, len(images), batch):
        inputs, boxes = zip(*(prepare_input(im, input_size, MEAN_RGB, STD_RGB) for im in images[start : start + batch]))
        logits = np.asarray(predict(np.concatenate(inputs, 0)))
        masks += [restore_mask(square, box) for square, box in zip(logits.argmax(1).astype(np.uint8), boxes)]
    return masks


def evaluate(predict: Callable, frames, masks, input_size: int, batch: int = 16) -> dict:
    """Dice at frame resolution (`predict_masks`): any-burn Dice, per-class Dice, the mean Dice of
    the burn depths and the confusion matrix (rows truth, columns prediction)."""
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for truth, predicted in zip(masks, predict_masks(predict, frames, input_size, batch)):
        confusion += confusion_matrix(truth, predicted)
    return {**dice_summary(confusion), "confusion": confusion.tolist()}


# ----------------------------------------------------------------------------- export


def random_weight_card(directory, input_size: int = 256, intended_use: str = "timing only: random weights") -> Path:
    """A BurnUNet with random weights (seed 0): state dict, checked ONNX and card in `directory`,
    for benchmarks on machines without the shipped model. Returns the card's path."""
    import torch
    import yaml

    directory = Path(directory)
    torch.manual_seed(0)
    model = build_model().eval()
    torch.save(model.state_dict(), directory / "burn_unet_random.pt")
    export_onnx(model, directory / "burn_unet_random.onnx", input_size)
    card = {
        "model_id": "burn_unet_random", "onnx": "burn_unet_random.onnx", "torch_state_dict": "burn_unet_random.pt",
        "architecture": {"name": "BurnUNet", "widths": list(WIDTHS)},
        "input": {"name": INPUT_NAME, "size": input_size, "multiple_of": MULTIPLE_OF},
        "output": {"name": OUTPUT_NAME, "channels": NUM_CLASSES},
        "classes": list(CLASS_NAMES),
        "normalisation": {"mean": list(MEAN_RGB), "std": list(STD_RGB)},
        "intended_use": intended_use,
    }
    path = directory / "burn_unet_random.yaml"
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


def export_onnx(model, path, input_size: int) -> dict:
    """ONNX opset 17, input `frames` (N, 3, H, W) float32, output `logits` (N, C, H, W), N/H/W dynamic.

    Checks the file with onnx.checker and compares ONNX Runtime with PyTorch on one input of the
    training size and one of another size (the dynamic axes). Returns the check's figures and the
    names of the first and last convolution (the layers quantization should keep precise).
    """
    import onnx
    import onnxruntime as ort
    import torch

    model = model.eval().to("cpu").float()
    example = torch.zeros(1, 3, input_size, input_size)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but gives a plain opset-17 graph
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N", 2: "H", 3: "W"}, OUTPUT_NAME: {0: "N", 2: "H", 3: "W"}},
            do_constant_folding=True,
        )
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    convs = [node.name for node in graph.graph.node if node.op_type == "Conv"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    diffs = {}
    for n, h, w in ((1, input_size, input_size), (2, input_size // 2 + MULTIPLE_OF, input_size + 2 * MULTIPLE_OF)):
        x = torch.randn(n, 3, h, w, generator=generator)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if got.shape != expected.shape or got.dtype != np.float32:
            raise RuntimeError(f"ONNX output {got.shape} {got.dtype} differs from PyTorch {expected.shape}")
        diffs[f"{n}x3x{h}x{w}"] = float(np.abs(got - expected).max())
    return {"max_abs_diff_vs_torch": diffs, "first_conv": convs[0], "last_conv": convs[-1], "opset": OPSET}


# ----------------------------------------------------------------------------- training


def _resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this PyTorch sees no CUDA device (use --device cpu or auto)")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    return torch.device(device)


def _augment(images, labels, generator):
    """GPU/CPU batch augmentation. images (B, 3, S, S) uint8 -> float32 0..255; labels (B, S, S) int64.

    Geometry: flips, a quarter turn, and for some samples a zoom/rotation/shift (labels nearest,
    outside -> ignore). Colour: brightness, contrast, saturation, a small hue turn, channel gains,
    noise. The hue turn is kept small: redness is part of what separates the depths.
    """
    import torch
    import torch.nn.functional as F

    dev = images.device
    b = images.shape[0]
    x = images.float()
    y = labels.long()

    def rand(*shape):
        return torch.rand(*shape, generator=generator, device="cpu").to(dev)

    flip = rand(b) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    y = torch.where(flip[:, None, None], y.flip(2), y)
    flip = rand(b) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(2), x)
    y = torch.where(flip[:, None, None], y.flip(1), y)
    if float(rand(1)) < 0.25:  # portrait framing
        x, y = x.transpose(2, 3), y.transpose(1, 2)

    # zoom / rotate / shift for half the samples
    warp = rand(b) < 0.5
    scale = torch.where(warp, 0.8 + 0.5 * rand(b), torch.ones(b, device=dev))
    angle = torch.where(warp, (rand(b) - 0.5) * 0.6, torch.zeros(b, device=dev))
    shift = torch.where(warp[:, None], (rand(b, 2) - 0.5) * 0.3, torch.zeros(b, 2, device=dev))
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    valid = (y != IGNORE).float()[:, None]
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    valid = F.grid_sample(valid, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0] > 0.5
    y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0].long()
    y = torch.where(valid, y, torch.full_like(y, IGNORE))

    # colour
    gray = x.mean(1, keepdim=True)
    saturation = 0.75 + 0.5 * rand(b, 1, 1, 1)
    x = gray + (x - gray) * saturation
    hue = (rand(b) - 0.5) * math.radians(16)  # +-8 degrees about the grey axis
    a = 1.0 / math.sqrt(3.0)  # rotation about the grey axis (Rodrigues)
    k = torch.tensor([[0.0, -a, a], [a, 0.0, -a], [-a, a, 0.0]], device=dev)
    eye = torch.eye(3, device=dev)
    rot = eye + torch.sin(hue)[:, None, None] * k + (1 - torch.cos(hue))[:, None, None] * (k @ k)
    x = torch.einsum("bij,bjhw->bihw", rot, x)
    contrast = 0.7 + 0.6 * rand(b, 1, 1, 1)
    brightness = (rand(b, 1, 1, 1) - 0.5) * 60
    gains = 0.9 + 0.2 * rand(b, 3, 1, 1)
    x = ((x - 128.0) * contrast + 128.0 + brightness) * gains
    noise = torch.randn(x.shape, generator=generator, device="cpu").to(dev) if dev.type == "cpu" else torch.randn_like(x)
    x = x + noise * (4.0 * rand(b, 1, 1, 1))
    x = x.clamp(0, 255)
    return x, y, valid


def class_weights(labels, num_classes: int = NUM_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """Each class's share of the labelled pixels (padding, IGNORE, left out), and the loss weights:
    a mild re-weighting of rare depths, 1/sqrt of the share, mean 1, clipped to 0.3..3."""
    counts = np.zeros(num_classes, np.float64)
    for start in range(0, len(labels), 256):  # in slices: one bincount over all labels would need gigabytes
        counts += np.bincount(labels[start : start + 256].ravel(), minlength=256)[:num_classes]
    freq = counts / counts.sum()
    weights = 1.0 / np.sqrt(np.maximum(freq, 1e-4))
    return freq, np.clip(weights / weights.mean(), 0.3, 3.0)


def _normalise(x, valid):
    """0..255 RGB -> model input; the padding (not valid) is 0, as `prepare_input` leaves it."""
    import torch

    mean = torch.tensor(MEAN_RGB, device=x.device).view(1, 3, 1, 1)
    inv_std = 1.0 / torch.tensor(STD_RGB, device=x.device).view(1, 3, 1, 1)
    return (x - mean) * inv_std * valid[:, None].float()


def _dice_loss(logits, labels, num_classes: int):
    """1 - mean soft Dice over the classes present in the batch (padding left out)."""
    import torch

    valid = labels != IGNORE
    probs = logits.float().softmax(1) * valid[:, None]
    onehot = torch.nn.functional.one_hot(torch.where(valid, labels, 0), num_classes).permute(0, 3, 1, 2).float()
    onehot = onehot * valid[:, None]
    inter = (probs * onehot).sum((0, 2, 3))
    denom = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return 1.0 - dice[present].mean()


def training_log(path: Path, mode: str, progress: Callable[[str], None]):
    """(say, file): say(message) writes '[seconds] message' to the log file and to progress."""
    log_file = open(path, mode)
    started = time.perf_counter()

    def say(message: str):
        line = f"[{time.perf_counter() - started:7.1f}s] {message}"
        log_file.write(line + "\n")
        log_file.flush()
        progress(line)

    return say, log_file


def train(
    out_dir,
    *,
    frames: int = 12000,
    seed: int = 1,
    size=(640, 480),
    frames_per_scene: int = 6,
    input_size: int = 256,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 3e-3,
    device: str = "auto",
    heldout_frames: int = 450,
    heldout_seed: int = 1_000_001,
    workers: int = 0,
    model_id: str = MODEL_ID,
    max_train_minutes: float | None = None,
    command: str | None = None,
    progress: Callable[[str], None] = print,
) -> dict:
    """Train BurnUNet on synthetic scenes; write `<model_id>.onnx`, `.pt`, `.yaml` card, metrics and log.

    frames: training frames drawn from `seed` (scenes of `frames_per_scene` frames, `size` = (W, H)).
    heldout_frames from `heldout_seed` are written to an mp4 with `synth.generate`, decoded with
    OpenCV and scored at frame resolution. Returns the card as a dict.
    """
    import torch

    if input_size % MULTIPLE_OF or input_size < 32:
        raise ValueError(f"input_size must be a multiple of {MULTIPLE_OF} and >= 32, got {input_size}")
    if heldout_seed == seed:
        raise ValueError(f"heldout_seed must differ from the training seed (both {seed})")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("heldout_frames", heldout_frames)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    synth._check_args(frames, seed, size, frames_per_scene, even=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say, log_file = training_log(out / f"{model_id}_train.log", "w", progress)

    dev = _resolve_device(device)
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    if dev.type == "cuda":
        # fast kernels over bit-for-bit repeatability on the GPU; the CPU path is repeatable
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    say(f"device {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}), torch {torch.__version__}, {os.cpu_count()} CPUs")

    # --- data: drawn before CUDA work starts, in worker processes
    images, labels = make_training_set(frames, seed, size, frames_per_scene, input_size, workers, progress=say)
    freq, weights = class_weights(labels)
    say("class share of training pixels: " + ", ".join(f"{n} {f:.3f}" for n, f in zip(CLASS_NAMES, freq)))

    held_out = {}
    for family, share in HELDOUT_FAMILIES.items():
        count = max(synth.DEFAULT_FRAMES_PER_SCENE, int(heldout_frames * share))
        with tempfile.TemporaryDirectory(prefix="holoburn_heldout_") as tmp:
            synth.generate(tmp, count, heldout_seed, size, synth.DEFAULT_FRAMES_PER_SCENE, family=family)
            held_out[family] = read_heldout(tmp)
    held_frames, held_masks = held_out["varied"]
    say("held-out, seed " + str(heldout_seed) + " through mp4 encode/decode: "
        + ", ".join(f"{family} {len(pair[0])} frames" for family, pair in held_out.items()))

    images_t = torch.from_numpy(images).to(dev)
    labels_t = torch.from_numpy(labels).to(dev)
    del images, labels
    model = build_model().to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    say(f"BurnUNet widths {list(WIDTHS)}: {count_parameters(model):,} parameters")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = max(1, frames // batch_size)
    # warm-up then cosine decay to lr/200; the horizon is a variable so that a time limit can
    # shorten the run and still end with a decayed learning rate
    horizon = {"steps": epochs * steps_per_epoch}

    def lr_factor(step: int) -> float:
        total = horizon["steps"]
        warm = max(1, int(0.05 * total))
        if step < warm:
            return 0.05 + 0.95 * step / warm
        progress_ = min(1.0, (step - warm) / max(1, total - warm))
        return 0.005 + 0.995 * 0.5 * (1 + math.cos(math.pi * progress_))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    criterion = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(weights, dtype=torch.float32, device=dev), ignore_index=IGNORE
    )
    generator = torch.Generator().manual_seed(seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)

    def predict(batch: np.ndarray):
        model.eval()
        with torch.no_grad(), autocast:
            x = torch.from_numpy(batch).to(dev)
            if dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            return model(x).float().cpu().numpy()

    step = 0
    epochs_done = 0
    epochs_planned = epochs
    train_started = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(frames, generator=generator)[: steps_per_epoch * batch_size].to(dev)
        loss_sum = torch.zeros((), device=dev)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            x, y, valid = _augment(images_t[idx], labels_t[idx], generator)
            x = _normalise(x, valid)
            if dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                logits = model(x)
            loss = criterion(logits.float(), y) + 0.5 * _dice_loss(logits, y, NUM_CLASSES)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            loss_sum += loss.detach()
        epochs_done = epoch + 1
        elapsed = time.perf_counter() - train_started
        message = (
            f"epoch {epochs_done}/{epochs_planned} step {step} mean loss {float(loss_sum) / steps_per_epoch:.4f} "
            f"lr {scheduler.get_last_lr()[0]:.2e} {elapsed:.0f}s ({step * batch_size / elapsed:.0f} images/s)"
        )
        if epochs_done % max(1, epochs_planned // 6) == 0 or epochs_done == epochs_planned:
            quick = evaluate(predict, held_frames[:90], held_masks[:90], input_size)
            message += f" | held-out[:90] any-burn {quick['any_burn_dice']:.3f} depth {quick['mean_depth_dice']:.3f}"
            model.train()
        say(message)
        torch.save(model.state_dict(), out / f"{model_id}.pt")  # partial result survives a cut-off run
        if epochs_done >= epochs_planned:
            break
        if max_train_minutes and epochs_done == 1:
            fits = int(max_train_minutes * 60 / (time.perf_counter() - train_started))
            if fits < epochs_planned:
                epochs_planned = max(2, fits)
                horizon["steps"] = epochs_planned * steps_per_epoch
                say(f"time limit {max_train_minutes} min: training {epochs_planned} epochs instead of {epochs}")
    train_seconds = time.perf_counter() - train_started

    scores = {family: evaluate(predict, *pair, input_size) for family, pair in held_out.items()}
    heldout = scores["varied"]
    for family, score in scores.items():
        say(
            f"held-out {family} ({len(held_out[family][0])} frames, seed {heldout_seed}): any-burn Dice "
            f"{score['any_burn_dice']:.4f}, mean depth Dice {score['mean_depth_dice']:.4f}, per class "
            + ", ".join(f"{k} {v:.3f}" for k, v in score["dice"].items() if v is not None)
        )

    model = model.to("cpu").float().to(memory_format=torch.contiguous_format)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out / f"{model_id}.pt")
    onnx_path = out / f"{model_id}.onnx"
    check = export_onnx(model, onnx_path, input_size)
    say(f"ONNX written, checker passed; onnxruntime vs torch max abs diff {check['max_abs_diff_vs_torch']}")

    from holoburn.engines.card import file_sha256

    card = {
        "model_id": model_id,
        "onnx": onnx_path.name,
        "sha256": file_sha256(onnx_path),
        "torch_state_dict": f"{model_id}.pt",
        "architecture": {
            "name": "BurnUNet",
            "builder": "holoburn.engines.unet.build_model",
            "widths": list(WIDTHS),
            "parameters": count_parameters(model),
        },
        "input": {
            "name": INPUT_NAME,
            "layout": "NCHW",
            "dtype": "float32",
            "size": input_size,
            "multiple_of": MULTIPLE_OF,
            "colour": "RGB",
            "dynamic_axes": ["N", "H", "W"],
            "letterbox": "frame scaled to fit size x size, aspect kept, padding 0 after normalisation",
        },
        "output": {"name": OUTPUT_NAME, "channels": NUM_CLASSES, "layout": "NCHW", "dtype": "float32", "kind": "logits"},
        "classes": list(CLASS_NAMES),
        "colours_rgb": CLASS_COLOURS_RGB.tolist(),
        "normalisation": {"mean": list(MEAN_RGB), "std": list(STD_RGB), "units": "0..255"},
        "training": {
            "data": "holoburn synth, scene families " + ", ".join(f"{k} {v:.0%}" for k, v in TRAINING_MIX.items()),
            "photographs": {name: "/".join(where) for name, where in photos.TRAINING_PHOTOS.items()},
            "generator_version": synth.GENERATOR_VERSION,
            "seed": seed,
            "frames": frames,
            "frames_per_scene": frames_per_scene,
            "size": list(size),
            "epochs": epochs,
            "epochs_completed": epochs_done,
            "time_limit_minutes": max_train_minutes,
            "batch": batch_size,
            "lr": lr,
            "optimizer": "AdamW (weight decay 1e-4), 5% warm-up then cosine decay",
            "loss": "class-weighted cross-entropy + 0.5 soft Dice; letterbox padding ignored",
            "augmentation": "scene families (photograph backgrounds, distractors, Fitzpatrick I-VI tones, white balance, exposure, gamma, blur, noise), mp4/JPEG round trips, aspect crops, flips, quarter turns, zoom/rotate/shift, colour jitter, noise",
            "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
            "torch_version": str(torch.__version__),
            "train_seconds": round(train_seconds, 1),
            "command": command or "",
        },
        "heldout": {
            "data": "holoburn synth family varied, written to mp4 ('mp4v') and decoded with OpenCV; Dice at frame resolution",
            "seed": heldout_seed,
            "frames": len(held_frames),
            "frames_per_scene": synth.DEFAULT_FRAMES_PER_SCENE,
            "any_burn_dice": round(heldout["any_burn_dice"], 4),
            "dice": {k: (None if v is None else round(v, 4)) for k, v in heldout["dice"].items()},
            "mean_depth_dice": None if heldout["mean_depth_dice"] is None else round(heldout["mean_depth_dice"], 4),
            "families": {
                family: {
                    "frames": len(held_out[family][0]),
                    "any_burn_dice": round(score["any_burn_dice"], 4),
                    "mean_depth_dice": None if score["mean_depth_dice"] is None else round(score["mean_depth_dice"], 4),
                }
                for family, score in scores.items()
            },
            "held_out_of_training": "family contact (contact-burn outlines) and photographs "
            + ", ".join(photos.HELD_OUT_PHOTOS),
        },
        "export": {"opset": OPSET, "onnxruntime_vs_torch_max_abs_diff": check["max_abs_diff_vs_torch"]},
        "sensitive_layers": [check["first_conv"], check["last_conv"]],
        "demonstration": True,  # synthetic training data: the overlay says "not for clinical use"
        "intended_use": (
            "Trained on synthetic images generated by holoburn synth. A demonstration of the pipeline, "
            "not for clinical use and not a diagnosis: bring your own model, trained and validated on "
            "clinical images, with its own card."
        ),
    }
    import yaml

    (out / f"{model_id}.yaml").write_text(yaml.safe_dump(card, sort_keys=False, width=100, default_flow_style=None))
    (out / f"{model_id}_metrics.json").write_text(json.dumps({"heldout": scores, "export": check}, indent=1) + "\n")
    say(f"card written: {out / (model_id + '.yaml')}")
    log_file.close()
    return card


# ----------------------------------------------------------------------------- command line


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", required=True, help="output folder for the ONNX model, state dict, card and log")
    parser.add_argument("--data", default=None,
                        help="fine-tune on your own images: a dataset from `holoburn dataset import` and `split` "
                             "(without it: the synthetic recipe of the shipped model)")
    parser.add_argument("--init", choices=("shipped", "none"), default="shipped",
                        help="with --data: start from the shipped model (default) or from random weights")
    parser.add_argument("--resume", action="store_true", help="with --data: continue from the last checkpoint in --out")
    parser.add_argument("--patience", type=int, default=6,
                        help="with --data: stop when validation any-burn Dice has not improved for this many epochs")
    parser.add_argument("--frames", type=int, default=12000, help="training frames (default 12000)")
    parser.add_argument("--seed", type=int, default=1, help="training seed (default 1)")
    parser.add_argument("--size", type=synth.parse_size, default=(640, 480), help="frame WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--frames-per-scene", type=int, default=6, help="training frames per scene (default 6)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs (default 30)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default 32; with --data 8)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default 3e-3; with --data 1e-3)")
    parser.add_argument("--input-size", type=int, default=256, help="square model input side, multiple of 16 (default 256)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--heldout-frames", type=int, default=450, help="held-out frames (default 450)")
    parser.add_argument("--heldout-seed", type=int, default=1_000_001, help="held-out seed, never used in training")
    parser.add_argument("--workers", type=int, default=0, help="data processes (default: one per CPU)")
    parser.add_argument("--model-id", default=None,
                        help=f"model id and file stem (default {MODEL_ID}; with --data burn_unet_finetuned)")
    parser.add_argument("--max-train-minutes", type=float, default=None, help="stop training after this long (safety net)")
    return parser


def _command_line(args: argparse.Namespace) -> str:
    parts = ["holoburn", "train"]
    for flag, value in (
        ("--out", args.out),
        ("--frames", args.frames),
        ("--seed", args.seed),
        ("--size", f"{args.size[0]}x{args.size[1]}"),
        ("--frames-per-scene", args.frames_per_scene),
        ("--epochs", args.epochs),
        ("--batch-size", args.batch_size),
        ("--lr", args.lr),
        ("--input-size", args.input_size),
        ("--device", args.device),
        ("--heldout-frames", args.heldout_frames),
        ("--heldout-seed", args.heldout_seed),
        ("--model-id", args.model_id),
    ):
        if value is not None:
            parts += [flag, str(value)]
    if args.max_train_minutes:
        parts += ["--max-train-minutes", str(args.max_train_minutes)]
    return shlex.join(parts)


def run_train(args: argparse.Namespace) -> dict:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise SystemExit("holoburn train needs PyTorch: pip install 'holoburn[train]' (or torch==2.13.0)")
    if args.data:
        from holoburn.app.training.finetune import finetune

        return finetune(
            args.data, args.out, init=args.init, epochs=args.epochs, batch_size=args.batch_size or 8,
            lr=args.lr or 1e-3, input_size=args.input_size, device=args.device, patience=args.patience,
            seed=args.seed, model_id=args.model_id or "burn_unet_finetuned", resume=args.resume,
            command=shlex.join(["holoburn", "train", *sys.argv[2:]]) if len(sys.argv) > 2 else "holoburn train",
            progress=lambda line: print(line, flush=True),
        )
    args.batch_size, args.lr, args.model_id = args.batch_size or 32, args.lr or 3e-3, args.model_id or MODEL_ID
    return train(
        args.out,
        frames=args.frames,
        seed=args.seed,
        size=args.size,
        frames_per_scene=args.frames_per_scene,
        input_size=args.input_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        heldout_frames=args.heldout_frames,
        heldout_seed=args.heldout_seed,
        workers=args.workers,
        model_id=args.model_id,
        max_train_minutes=args.max_train_minutes,
        command=_command_line(args),
        progress=lambda line: print(line, flush=True),
    )


def main(argv=None):  # `python3 -m holoburn.app.training.train ...`, the same flags as `holoburn train`
    parser = add_train_arguments(argparse.ArgumentParser(prog="holoburn train", description=__doc__.splitlines()[0]))
    run_train(parser.parse_args(argv))


if __name__ == "__main__":
    main()
