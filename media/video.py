"""Video files in and out through OpenCV (FFmpeg underneath). Frames are (H, W, 3) uint8 RGB."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np


class VideoError(ValueError):
    """A video file is missing, empty or cannot be decoded; the message names the file."""


class VideoReader:
    """Decode a video file frame by frame.

    Opening checks what a user can get wrong (no such file, an empty file, a file that is not a
    video) and fails with a message naming the file. `frame_count` is what the container claims;
    `read()` returns (frame_rgb or None at the end, timestamp_s).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise VideoError(f"video not found: {self.path}")
        if not self.path.is_file():
            raise VideoError(f"not a file: {self.path} (give the path of a video file)")
        if self.path.stat().st_size == 0:
            raise VideoError(f"video file is empty (0 bytes): {self.path}")
        self._capture = cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            raise VideoError(f"cannot open {self.path} as a video: not a video file, or a codec FFmpeg lacks")
        self.fps = float(self._capture.get(cv2.CAP_PROP_FPS)) or 0.0
        self.frame_count = max(0, int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        self.width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.frames_read = 0
        self._first = self._decode()
        if self._first is None:
            self.close()
            raise VideoError(f"no decodable frame in {self.path}: empty or corrupt video")

    def _decode(self):
        ok, bgr = self._capture.read()
        if not ok or bgr is None:
            return None
        return to_rgb8(bgr), self._timestamp()

    def _timestamp(self) -> float:
        msec = self._capture.get(cv2.CAP_PROP_POS_MSEC)
        if msec or not self.fps:
            return msec / 1000.0
        return self.frames_read / self.fps

    def read(self):
        """Next frame as (rgb uint8 (H, W, 3), timestamp_s), or (None, None) at the end."""
        if self._first is not None:
            item, self._first = self._first, None
        else:
            item = self._decode()
        if item is None:
            return None, None
        self.frames_read += 1
        frame, ts = item
        if not ts and self.fps and self.frames_read > 1:
            ts = (self.frames_read - 1) / self.fps
        return frame, ts

    def next_frame(self):
        """The source interface: (rgb, timestamp_s, status); status None at the end."""
        frame, ts = self.read()
        return (frame, ts, "ok") if frame is not None else (None, None, None)

    @property
    def missing_frames(self) -> int:
        """Frames the container claims but that could not be decoded (a truncated file)."""
        return max(0, self.frame_count - self.frames_read)

    def close(self) -> None:
        self._capture.release()

    def reopen(self) -> "VideoReader":
        """A fresh reader at the start of the same file (for looping)."""
        self.close()
        return VideoReader(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        while True:
            frame, ts = self.read()
            if frame is None:
                return
            yield frame, ts


class FrameListReader:
    """Frames already in memory behind the reader interface (benchmarks: no decoding cost)."""

    def __init__(self, frames: list, fps: float = 30.0, name: str = "memory"):
        if not frames:
            raise VideoError(f"{name}: no frames given")
        self.frames, self.fps, self.path = frames, fps, Path(name)
        self.frame_count = len(frames)
        self.width, self.height = frames[0].shape[1], frames[0].shape[0]
        self.frames_read = 0
        self.missing_frames = 0

    def read(self):
        if self.frames_read >= len(self.frames):
            return None, None
        frame = self.frames[self.frames_read]
        self.frames_read += 1
        return frame, (self.frames_read - 1) / self.fps

    def next_frame(self):
        frame, ts = self.read()
        return (frame, ts, "ok") if frame is not None else (None, None, None)

    def reopen(self) -> "FrameListReader":
        return FrameListReader(self.frames, self.fps, str(self.path))

    def close(self) -> None:
        pass


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any decoded picture (grey, BGR, BGRA; 8- or 16-bit) -> (H, W, 3) uint8 RGB."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class VideoWriter:
    """Write RGB frames to a video file (MPEG-4 Part 2 in .mp4 by default: FFmpeg in every OpenCV wheel).

    4:2:0 codecs need even sizes: an odd width or height is padded by one replicated column or
    row (no picture content is lost); `size` tells what was written.
    """

    def __init__(self, path: str | os.PathLike, fps: float, fourcc: str = "mp4v"):
        self.path = Path(path)
        self.fps = fps if fps and fps > 0 else 30.0
        self.fourcc = fourcc
        self._writer = None
        self.frames_written = 0
        self.size = None  # (width, height) as written

    def write(self, frame_rgb: np.ndarray) -> None:
        height, width = frame_rgb.shape[:2]
        if height % 2 or width % 2:
            frame_rgb = cv2.copyMakeBorder(frame_rgb, 0, height % 2, 0, width % 2, cv2.BORDER_REPLICATE)
            height, width = frame_rgb.shape[:2]
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (width, height))
            if not self._writer.isOpened():
                raise VideoError(f"cannot write video {self.path} with codec {self.fourcc}")
            self._size = (width, height)
            self.size = self._size
        if (frame_rgb.shape[1], frame_rgb.shape[0]) != self._size:
            frame_rgb = cv2.resize(frame_rgb, self._size)
        self._writer.write(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))
        self.frames_written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
