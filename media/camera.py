"""A bedside camera through OpenCV's V4L2 capture, with reconnection.

A camera that disappears mid-run must not stop the pipeline: `CameraReader.read()` then returns
no picture with status `no_signal` at the camera's frame rate while it retries the device with
exponential back-off, and counts the frames lost in the gap. The device is opened through
`open_capture` so tests can put a fake device at this boundary (no camera exists in CI).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from holoburn.clinical.errors import BadConfig, BadInput
from holoburn.media.video import to_rgb8

log = logging.getLogger("holoburn.camera")

PIXEL_FORMATS = ("YUYV", "MJPG")


class CameraError(BadInput):
    """A camera device is missing or cannot be opened; the message names the device and what to check."""


@dataclass
class Backoff:
    """Retry delays: initial, doubling up to a ceiling; reset once the device is back."""

    initial_s: float = 0.5
    maximum_s: float = 8.0
    _next: float = field(default=0.0, init=False)

    def next_delay(self) -> float:
        self._next = self.initial_s if self._next == 0 else min(self.maximum_s, self._next * 2)
        return self._next

    def reset(self) -> None:
        self._next = 0.0


def open_opencv_capture(device: str, width: int, height: int, fps: float, pixel_format: str):
    """Open a V4L2 device with OpenCV; None when it cannot be opened."""
    if pixel_format not in PIXEL_FORMATS:
        raise BadConfig(f"camera.pixel_format {pixel_format!r}: choose one of {', '.join(PIXEL_FORMATS)}")
    capture = cv2.VideoCapture(device, cv2.CAP_V4L2)
    if not capture.isOpened():
        capture.release()
        return None
    capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*pixel_format))
    capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
    capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
    capture.set(cv2.CAP_PROP_FPS, fps)
    return capture


class CameraReader:
    """Frames from a camera, through losses and reconnections.

    read() -> (rgb uint8 or None, timestamp_s, status) with status "ok" or "no_signal";
    it never ends by itself (a live source); `stop()` ends it.
    """

    def __init__(self, device: str, *, width=1920, height=1080, fps=30.0, pixel_format="YUYV",
                 backoff: Backoff | None = None, open_capture=open_opencv_capture, clock=time.monotonic,
                 sleep=time.sleep, must_open=True):
        self.device, self.width, self.height, self.fps = device, width, height, fps
        self.pixel_format = pixel_format
        self.backoff = backoff or Backoff()
        self._open_capture, self._clock, self._sleep = open_capture, clock, sleep
        self.path = device
        self.frame_count = 0  # unknown for a live source
        self.frames_read = 0
        self.missing_frames = 0
        self.no_signal_frames = 0  # frames reported as no_signal while the camera was gone
        self.reconnects = 0
        self.gaps: list[dict] = []  # each loss: when, how long, frames lost
        self._started = clock()
        self._capture = self._open_capture(device, width, height, fps, pixel_format)
        if self._capture is None and must_open:
            raise CameraError(_why_not_open(device))
        self._lost_at = None if self._capture is not None else clock()
        self._retry_at = self._lost_at
        self._stopped = False

    def _timestamp(self) -> float:
        return self._clock() - self._started

    def next_frame(self):
        return self.read()

    def read(self):
        if self._stopped:
            return None, None, None
        if self._capture is not None:
            ok, image = self._capture.read()
            if ok and image is not None:
                self.frames_read += 1
                return to_rgb8(image), self._timestamp(), "ok"
            self._lose()
        return self._no_signal()

    def _lose(self) -> None:
        log.warning("camera %s lost; retrying with back-off", self.device)
        self._capture.release()
        self._capture = None
        self._lost_at = self._clock()
        self._retry_at = self._lost_at + self.backoff.next_delay()

    def _no_signal(self):
        """One frame period of NO SIGNAL; retries the device when its back-off has passed."""
        now = self._clock()
        if now >= self._retry_at:
            self._capture = self._open_capture(self.device, self.width, self.height, self.fps, self.pixel_format)
            if self._capture is not None:
                gap = now - self._lost_at
                self.gaps.append({"at_s": round(self._lost_at - self._started, 3), "seconds": round(gap, 3),
                                  "frames_lost": int(round(gap * self.fps))})
                self.missing_frames += int(round(gap * self.fps))
                self.reconnects += 1
                self.backoff.reset()
                log.warning("camera %s back after %.1f s", self.device, gap)
                return self.read()
            self._retry_at = now + self.backoff.next_delay()
        self._sleep(1.0 / self.fps)
        self.no_signal_frames += 1
        return None, self._timestamp(), "no_signal"

    def reopen(self) -> "CameraReader":
        return self

    def stop(self) -> None:
        self._stopped = True

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def _why_not_open(device: str) -> str:
    """The message for a camera that would not open, naming the device and what to check."""
    if device.startswith("/dev/") and not os.path.exists(device):
        return (f"camera {device} not found: no such device; check that the camera is plugged in and its "
                "number (ls /dev/video*)")
    return (f"camera {device} cannot be opened: busy, no permission, or not a capture device "
            f"(check `ls -l {device}`, that the user is in the video group, and that no other program uses it)")


def blank(height: int, width: int) -> np.ndarray:
    return np.zeros((height, width, 3), np.uint8)
