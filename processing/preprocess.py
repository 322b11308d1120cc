"""Frame -> model input and model output -> frame geometry, shared by the pipeline, training,
calibration and validation so that every path sees the same pixels.

Frames are (H, W, 3) uint8 RGB. Model input is (1, 3, S, S) float32, NCHW, the frame scaled to fit
an S x S square with its aspect ratio kept and the rest padded (letterbox). Works on NumPy arrays
on the CPU and CuPy arrays on the GPU (`xp` is the array's module).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from holoburn.clinical.errors import BadFrame


def array_module(x):
    """NumPy for host arrays, CuPy for device arrays (without importing CuPy when it is absent)."""
    if type(x).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


@dataclass(frozen=True)
class Letterbox:
    """Where the frame sits inside the square model input (all in model-input pixels)."""

    size: int  # S: side of the square model input
    top: int
    left: int
    height: int  # scaled frame height inside the square
    width: int  # scaled frame width inside the square
    frame_height: int
    frame_width: int


def letterbox_geometry(frame_height: int, frame_width: int, size: int) -> Letterbox:
    if frame_height <= 0 or frame_width <= 0:
        raise BadFrame("empty_image", f"frame size must be positive, got {frame_width}x{frame_height}")
    scale = size / max(frame_height, frame_width)
    height = max(1, min(size, round(frame_height * scale)))
    width = max(1, min(size, round(frame_width * scale)))
    top = (size - height) // 2
    left = (size - width) // 2
    return Letterbox(size, top, left, height, width, frame_height, frame_width)


def _resize(image, width: int, height: int, nearest: bool = False):
    """The one resampling of holoburn, on the CPU and the GPU alike: bilinear with half-pixel
    centres (nearest for class masks). OpenCV's INTER_LINEAR computes it on the host (with
    fixed-point weights), `_resize_device` and the lane kernels on the device; the two agree
    to within one grey level."""
    xp = array_module(image)
    if nearest:  # an index gather, the same expressions on both sides: identical masks
        in_h, in_w = image.shape[:2]
        rows = xp.take(image, nearest_indices(xp, in_h, height), axis=0)  # two 1-D gathers: 4x faster than one 2-D
        return xp.take(rows, nearest_indices(xp, in_w, width), axis=1)
    if xp is np:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return _resize_device(image, width, height)


def nearest_indices(xp, in_len: int, out_len: int):
    """Source index of each output index of a nearest resize (half-pixel centres), int32."""
    pos = (xp.arange(out_len, dtype=xp.float32) + 0.5) * (in_len / out_len) - 0.5
    return xp.clip(xp.floor(pos + 0.5), 0, in_len - 1).astype(xp.int32)


def _resize_device(image, width: int, height: int):
    """Bilinear resize (half-pixel centres) on the GPU with CuPy."""
    import cupy as cp

    in_h, in_w = image.shape[:2]
    ys = (cp.arange(height, dtype=cp.float32) + 0.5) * (in_h / height) - 0.5
    xs = (cp.arange(width, dtype=cp.float32) + 0.5) * (in_w / width) - 0.5
    ys = cp.clip(ys, 0, in_h - 1)
    xs = cp.clip(xs, 0, in_w - 1)
    y0 = cp.floor(ys).astype(cp.int32)
    x0 = cp.floor(xs).astype(cp.int32)
    y1 = cp.minimum(y0 + 1, in_h - 1)
    x1 = cp.minimum(x0 + 1, in_w - 1)
    wy = (ys - y0)[:, None]
    wx = (xs - x0)[None, :]
    src = image.astype(cp.float32)
    if src.ndim == 3:
        wy = wy[..., None]
        wx = wx[..., None]
    top = src[y0[:, None], x0[None, :]] * (1 - wx) + src[y0[:, None], x1[None, :]] * wx
    bottom = src[y1[:, None], x0[None, :]] * (1 - wx) + src[y1[:, None], x1[None, :]] * wx
    out = top * (1 - wy) + bottom * wy
    return out if image.dtype == cp.float32 else cp.clip(out + 0.5, 0, 255).astype(image.dtype)


def prepare_input(frame_rgb, size: int, mean, std, out=None):
    """Letterbox and normalise one frame.

    frame_rgb: (H, W, 3) uint8 RGB. mean, std: per-channel, in 0..255 units.
    out: optional preallocated (1, 3, size, size) float32 array to write into.
    Returns (model_input (1, 3, size, size) float32, Letterbox).
    """
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3:
        raise BadFrame("not_rgb", f"expected an (H, W, 3) RGB frame, got shape {tuple(frame_rgb.shape)}")
    xp = array_module(frame_rgb)
    box = letterbox_geometry(frame_rgb.shape[0], frame_rgb.shape[1], size)
    scaled = _resize(frame_rgb, box.width, box.height)
    mean = xp.asarray(mean, dtype=xp.float32).reshape(3, 1, 1)
    inv_std = 1.0 / xp.asarray(std, dtype=xp.float32).reshape(3, 1, 1)
    if out is None:
        out = xp.empty((1, 3, size, size), dtype=xp.float32)
    out[...] = 0.0  # padding = the mean colour after normalisation
    content = out[0, :, box.top : box.top + box.height, box.left : box.left + box.width]
    content[...] = (xp.moveaxis(scaled, 2, 0).astype(xp.float32) - mean) * inv_std
    return out, box


def restore_mask(mask_square, box: Letterbox):
    """(S, S) class mask in model-input space -> (frame_height, frame_width) uint8 mask."""
    content = mask_square[box.top : box.top + box.height, box.left : box.left + box.width]
    xp = array_module(content)
    content = xp.ascontiguousarray(content.astype(xp.uint8))
    return _resize(content, box.frame_width, box.frame_height, nearest=True)


def restore_probabilities(probs_square, box: Letterbox):
    """(C, S, S) float class probabilities -> (C, frame_height, frame_width) float32 (bilinear)."""
    content = probs_square[:, box.top : box.top + box.height, box.left : box.left + box.width]
    xp = array_module(content)
    hwc = xp.ascontiguousarray(xp.moveaxis(content.astype(xp.float32), 0, 2))
    resized = _resize(hwc, box.frame_width, box.frame_height)
    if resized.ndim == 2:
        resized = resized[..., None]
    return xp.ascontiguousarray(xp.moveaxis(resized, 2, 0))


def segment(logits, letterbox):
    """(1, C, S, S) logits -> (H, W) uint8 class mask at the frame's size."""
    xp = array_module(logits)
    return restore_mask(xp.argmax(logits[0], axis=0).astype(xp.uint8), letterbox)
