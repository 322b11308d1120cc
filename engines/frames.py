"""Frame sets on disk: the calibration frames of INT8 and the frames of a held-out set.

A frame set is a directory of PNG/JPEG files, a `frames/` folder of them, a video (or a
directory holding one video, as `holoburn synth` writes), or a single image or video file.
Frames come out as (H, W, 3) uint8 RGB, at the size they were recorded; the preprocessing of the
pipeline is applied by whoever feeds them to a model (quantize.calibration_batches, gate.segment).

Layering inside engines/: this module imports nothing of engines/; quantize.py (calibration)
and gate.py (held-out sets) read frames through it, and precision.py sits above both.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from holoburn.clinical.errors import BadInput

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")


class FrameSetError(BadInput):
    """A frame set the user named is missing, unreadable or empty."""


def _video_in(directory: Path) -> Path | None:
    videos = sorted(p for p in directory.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    return videos[0] if videos else None


def _images_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image_rgb(path: Path) -> np.ndarray:
    """One image file -> (H, W, 3) uint8 RGB."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameSetError(f"cannot read image {path}: not an image OpenCV can decode; replace or remove it")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def iter_video_rgb(path: Path) -> Iterator[np.ndarray]:
    """Every frame of a video file as (H, W, 3) uint8 RGB, in order."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FrameSetError(f"cannot open video {path}: not a video OpenCV can decode; re-encode it (e.g. H.264 .mp4) or give PNG frames")
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def frame_paths_or_video(path: str | Path) -> tuple[list[Path], Path | None]:
    """Resolve a frame set: (image files, None) or ([], video file)."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return [], path
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return [path], None
        raise FrameSetError(f"{path} is neither a video ({', '.join(VIDEO_SUFFIXES)}) nor an image ({', '.join(IMAGE_SUFFIXES)})")
    if not path.is_dir():
        raise FrameSetError(f"frames not found: {path} (give a directory of PNG/JPEG frames or a video)")
    for sub in (path, path / "frames"):
        if sub.is_dir():
            images = _images_in(sub)
            if images:
                return images, None
    video = _video_in(path)
    if video is not None:
        return [], video
    raise FrameSetError(f"no frames in {path}: expected PNG/JPEG files, a frames/ folder or a video")


def iter_frames_rgb(path: str | Path, limit: int | None = None) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 RGB frames from `path`; with `limit`, that many evenly spaced frames."""
    images, video = frame_paths_or_video(path)
    if images:
        chosen = images
        if limit and len(images) > limit:
            chosen = [images[int(i)] for i in np.linspace(0, len(images) - 1, limit).round()]
        for image in chosen:
            yield read_image_rgb(image)
        return
    frames = list(iter_video_rgb(video))
    if not frames:
        raise FrameSetError(f"video {video} has no readable frames; re-encode it or give PNG frames")
    if limit and len(frames) > limit:
        frames = [frames[int(i)] for i in np.linspace(0, len(frames) - 1, limit).round()]
    yield from frames
