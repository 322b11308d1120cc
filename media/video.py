"""Video files in and out through OpenCV (FFmpeg underneath). Frames are (H, W, 3) uint8 RGB.

A video file is read twice over, in step: the decoder's frames, and the container's own list of
frames (its video packets, demuxed without decoding, a few dozen packets ahead of the decoder).
Comparing the two tells apart the ways a frame can fail to arrive, so none is lost silently:

- decode error: the file holds the frame but it does not decode (corrupt data). It is delivered
  in its place, without a picture, with status "decode_error", and counted like any frame.
- missing: the container lists the frame but the file ends before it (a truncated file). Known
  at the end of the file; `missing_frames` counts them.

OpenCV stops at the first packet the decoder rejects as if the file had ended; the reader reads
on past it as long as the container holds more packets, so a corrupt stretch in the middle of a
file costs only its own frames.
"""
from __future__ import annotations

import heapq
import math
import os
import struct
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from holoburn.clinical.errors import BadInput

DECODE_ERROR = "decode_error"  # Frame.status of a frame the file holds but that did not decode

#: packets the container timeline keeps read ahead of the decoder: more than any codec reorders
LOOKAHEAD = 32
#: reads tried after the decoder fails, beyond the packets the container says are still to come
RETRIES = 64


class VideoError(BadInput):
    """A video file is missing, empty or cannot be decoded; the message names the file."""


class VideoReader:
    """Decode a video file frame by frame.

    Opening checks what a user can get wrong (no such file, a folder, an empty file, a picture,
    text or audio instead of a video, an MP4 cut off before its index was written, a malformed
    header) and fails with a VideoError naming the file and what to do.

    next_frame() -> (rgb (H, W, 3) uint8 or None, timestamp_s, status): status "ok", "decode_error"
    (no picture), or None at the end. Timestamps are seconds from the first frame: the container's
    presentation times where it has them; frame index / fps where it does not (raw streams) or
    where OpenCV reports them shifted (AVI with B-frames).

    Counts: `frame_count` is what the container lists (at the end of the file, for containers
    that only estimate it from duration x rate, the frames the file actually holds);
    `frames_read` decoded frames delivered; `decode_errors`; `missing_frames` frames listed but
    absent (0 until the end is reached).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:  # the file can vanish or lose its permissions between the checks (a reopen for looping)
            self.container = _check_file(self.path)
            self._identity = _identity(self.path)
            self._capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
            if not self._capture.isOpened():
                self._capture.release()
                raise VideoError(_why_unopenable(self.path, self.container))
        except OSError as exc:
            raise VideoError(f"cannot read {self.path}: {exc.strerror or exc}; check that it exists and "
                             "is readable") from None
        fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if math.isfinite(fps) and 0 < fps < 1000 else 0.0
        self._period = 1.0 / (self.fps or 30.0)  # frame period for timing where the file gives none
        claimed = self._capture.get(cv2.CAP_PROP_FRAME_COUNT)
        # OpenCV returns garbage (negative, huge) for raw streams and still images
        self.declared_frames = int(claimed) if math.isfinite(claimed) and 0 < claimed < 1e9 else 0
        self.frame_count = self.declared_frames
        # MP4/MOV and AVI state their frame count; other containers' count is duration x rate
        self.count_is_exact = self.container in ("mp4", "avi")
        self.width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.frames_read = 0
        self.decode_errors = 0
        self.ended = False
        self._missing = 0
        self._queue: deque = deque()  # (image or None, timestamp_s, status) ready to hand out
        self._last_ts: float | None = None
        self._decoder_times = True  # use OpenCV's timestamps (False: frame index / fps)
        self._timeline = _ContainerTimeline(self.path, self._period)
        self._pull()
        if not any(status == "ok" for _, _, status in self._queue):
            declared = f" (the container lists {self.declared_frames} frames)" if self.declared_frames else ""
            self.close()
            raise VideoError(f"no decodable frame in {self.path}{declared}: the video data is corrupt or uses a "
                             "codec this FFmpeg build cannot decode; check that the file plays in a video player")

    # --- decoding ---------------------------------------------------------------------------------

    def _pull(self) -> None:
        """Decode the next frame into the queue, preceded by any frames found lost before it;
        at the end of the file, settle the accounting."""
        image = self._decode_next()
        if image is None:
            self._settle()
            return
        reported = self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        first = self._last_ts is None
        if first:
            # The decoder's first frame must land on the container's first frame time. When it does
            # not (AVI with B-frames: OpenCV reports times shifted by the reordering delay), frames
            # are timed by index; frames are then not matched to the container's list either.
            earliest = self._timeline.earliest()
            if earliest is not None and abs(reported - earliest) > self._timeline.tolerance_s:
                self._decoder_times = False
                self._timeline.distrust()
        if self._decoder_times and (first or reported > self._last_ts):
            ts = reported
        else:  # no usable time for this frame: one period after the last
            ts = 0.0 if first else self._last_ts + self._period
            self._timeline.distrust()
        for lost_ts in self._timeline.take(ts)[:self._room_for_lost(before_next=1)]:
            self._queue.append((None, lost_ts, DECODE_ERROR))
            self.decode_errors += 1
        self._queue.append((to_rgb8(image), ts, "ok"))
        self._last_ts = ts

    def _accounted(self) -> int:
        """Frames of the file dealt with so far: decoded (handed out or queued) and failed."""
        return self.frames_read + sum(1 for item in self._queue if item[2] == "ok") + self.decode_errors

    def _room_for_lost(self, before_next: int = 0) -> int | None:
        """How many frames that did not decode the file can still hold (None: no bound).

        A container that states its frame count (MP4, AVI) holds that many frames, however many
        packets its demuxer delivers: with a damaged index FFmpeg scans the file chunk by chunk and
        reads the index's own entries as packets (an AVI of 90 frames gave 135). Packets past the
        count are not frames; counting them as frames that failed to decode counted frames twice."""
        if not (self.count_is_exact and self.declared_frames):
            return None
        return max(0, self.declared_frames - self._accounted() - before_next)

    def _decode_next(self):
        """The next decoded BGR picture, or None at the end of the file.

        OpenCV's read() fails on a packet the decoder rejects just as at the end of the file; read
        on while the container holds packets the decoder has not reached, then RETRIES more."""
        failures = 0
        while True:
            ok, image = self._capture.read()
            if ok and image is not None:
                return image
            failures += 1  # each failed read consumed a packet
            self._timeline.fill_to(self._accounted() + failures + LOOKAHEAD)
            if failures > RETRIES + max(0, self._timeline.present - self._accounted()):
                return None

    def _settle(self) -> None:
        """End of file: frames the container holds that never decoded are decode errors (at the
        times of their packets, or after the last frame when those are not known); frames it
        lists but does not hold are missing."""
        self.ended = True
        self._timeline.read_to_end()
        undecoded = max(0, self._timeline.present - self._accounted())
        room = self._room_for_lost()
        undecoded = undecoded if room is None else min(undecoded, room)
        present = self._accounted() + undecoded
        leftover = self._timeline.leftover()
        last = self._last_ts if self._last_ts is not None else -self._period
        for k in range(undecoded):
            ts = leftover[k] if k < len(leftover) else last + (k + 1) * self._period
            self._queue.append((None, ts, DECODE_ERROR))
        self.decode_errors += undecoded
        if self.declared_frames > present and self._ends_early():
            self._missing = self.declared_frames - present
        else:  # the count was an estimate (or unknown): the frames the file holds are its count
            self.frame_count = present

    def _ends_early(self) -> bool:
        """Whether the file stops short of what its container declares: always, for a container
        that states its frame count; for one whose count is its duration x rate, when the last
        frame comes more than a frame period before that duration (a variable rate is no loss)."""
        if self.count_is_exact:
            return True
        last = max(self._timeline.latest or 0.0, self._last_ts or 0.0)
        return last + 1.5 * self._period < self.declared_frames * self._period

    # --- the reader interface -----------------------------------------------------------------------

    def next_frame(self):
        """(rgb uint8 (H, W, 3) or None, timestamp_s, status); (None, None, None) at the end."""
        if not self._queue and not self.ended:
            self._pull()
        if not self._queue:
            return None, None, None
        image, ts, status = self._queue.popleft()
        if status == "ok":
            self.frames_read += 1
        return image, ts, status

    def read(self):
        """Next decoded frame as (rgb uint8 (H, W, 3), timestamp_s), or (None, None) at the end
        (frames that did not decode are skipped here; next_frame() reports them)."""
        while True:
            image, ts, status = self.next_frame()
            if status is None or status == "ok":
                return image, ts

    @property
    def missing_frames(self) -> int:
        """Frames the container lists that the file does not hold (truncated); 0 until the end."""
        return self._missing

    def accounting(self, name: str | None = None) -> str:
        """One line on what the file held and what came of it, naming the file (or `name`: a
        running pipeline names its sources by opaque ids, never by path)."""
        parts = [f"{self.frames_read} decoded"]
        if self.decode_errors:
            parts.append(f"{self.decode_errors} failed to decode (corrupt data)")
        if self._missing:
            parts.append(f"{self._missing} missing (listed but not in the file: truncated or damaged)")
        if _identity(self.path) != self._identity:  # frames after the change are lost or undecodable
            parts.append("the file changed or was removed while it was read")
        listed = self.declared_frames if self._missing else self.frame_count
        return f"{name or self.path}: the container lists {listed} frames; " + ", ".join(parts)

    def close(self) -> None:
        self._capture.release()
        self._timeline.close()

    def reopen(self) -> "VideoReader":
        """A fresh reader at the start of the same file (for looping); VideoError when the file
        changed or vanished since."""
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


class _ContainerTimeline:
    """The frames a video file holds, as the presentation times of its video packets, demuxed
    through OpenCV's raw-stream mode (no decoding).

    `present` counts packets. A packet the demuxer rejects between two good ones (corrupt data)
    still counts, as a hole: present, time unknown. While `trusted` (packet times distinct, every
    decoded frame's time found among them), a packet that a later decoded frame passes by without
    a frame of its own is a frame that failed to decode, and holes take the empty frame slots in
    the gaps between decoded frames.
    """

    def __init__(self, path: Path, period_s: float):
        self.period_s = period_s
        self.tolerance_s = min(period_s / 2, 1e-3)  # decoder and demuxer report the same times
        self.present = 0
        self.holes = 0  # holes not yet given a place
        self.latest: float | None = None  # latest packet time seen
        self._capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_FORMAT, -1])
        self.ended = not self._capture.isOpened()
        self.trusted = not self.ended
        self._pending: list = []  # heap of packet times read but not yet matched to a decoded frame
        self._recent: deque = deque(maxlen=4 * LOOKAHEAD)  # recent packet times, for distinctness
        self._matched: float | None = None  # time of the last decoded frame matched

    def _read_packet(self) -> list[float]:
        """Read the next good packet (counting any rejected before it); its time, or [] at the end."""
        failures = 0
        while not self.ended:
            if self._capture.grab():
                self.present += failures
                self.holes += failures
                return [self._add(self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)]
            failures += 1
            if failures > RETRIES:
                self.close()
        return []

    def _add(self, ts: float) -> float:
        self.present += 1
        self.latest = ts if self.latest is None else max(self.latest, ts)
        if any(abs(ts - seen) <= self.tolerance_s for seen in self._recent):
            self.distrust()  # times repeat (raw streams, MPEG-PS): frames cannot be matched by time
        self._recent.append(ts)
        if self.trusted:
            heapq.heappush(self._pending, ts)
        return ts

    def _fill_past(self, ts: float) -> None:
        """Read until LOOKAHEAD packets later than `ts` are in hand (or the file ends)."""
        later = sum(1 for t in self._pending if t > ts + self.tolerance_s)
        while self.trusted and later < LOOKAHEAD and not self.ended:
            later += sum(1 for t in self._read_packet() if t > ts + self.tolerance_s)

    def earliest(self) -> float | None:
        """The time of the first frame the container holds (None when times cannot be trusted)."""
        self._fill_past(-math.inf)
        return self._pending[0] if self.trusted and self._pending else None

    def take(self, ts: float) -> list[float]:
        """Match a decoded frame at `ts` to its packet; the times of frames before it that failed
        to decode (packets passed by, holes placed in empty slots). Nothing once times cannot be
        trusted."""
        if not self.trusted:
            return []
        self._fill_past(ts)
        match = min(((abs(t - ts), i) for i, t in enumerate(self._pending) if abs(t - ts) <= self.tolerance_s),
                    default=None)
        if match is None:  # a frame the container does not list: decoder and demuxer disagree on times
            self.distrust()
            return []
        self._pending.pop(match[1])
        heapq.heapify(self._pending)
        lost = []
        while self._pending and self._pending[0] < ts - self.tolerance_s:
            lost.append(heapq.heappop(self._pending))
        if self.holes and self._matched is not None:
            slot = self._matched + self.period_s
            while self.holes and slot < ts - self.period_s / 2:
                if all(abs(slot - t) > self.period_s / 2 for t in lost):
                    lost.append(slot)
                    self.holes -= 1
                slot += self.period_s
            lost.sort()
        self._matched = ts
        return lost

    def distrust(self) -> None:
        self.trusted = False
        self._pending.clear()

    def fill_to(self, count: int) -> None:
        """Read until `count` packets are known (or the file ends)."""
        while self.present < count and self._read_packet():
            pass

    def read_to_end(self) -> None:
        while self._read_packet():
            pass
        self.close()

    def leftover(self) -> list[float]:
        """Times of packets no decoded frame matched (while trusted; else none), in time order."""
        return sorted(self._pending)

    def close(self) -> None:
        self.ended = True
        self._capture.release()


class FrameListReader:
    """Frames already in memory behind the reader interface (benchmarks: no decoding cost)."""

    def __init__(self, frames: list, fps: float = 30.0, name: str = "memory"):
        if not frames:
            raise VideoError(f"{name}: no frames given")
        self.frames, self.fps, self.path = frames, fps, Path(name)
        self.frame_count = len(frames)
        self.width, self.height = frames[0].shape[1], frames[0].shape[0]
        self.frames_read = 0
        self.decode_errors = 0
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


def _identity(path: Path) -> tuple | None:
    """What tells a file apart from its replacement or a changed copy (None: it is gone)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


# --- what a file is, before FFmpeg is asked ---------------------------------------------------------

#: (offset, magic bytes, what the file is) for files that are not video but are mistaken for it
_NOT_VIDEO = (
    (0, b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"BM", "a BMP image"),
    (0, b"II*\x00", "a TIFF image"),
    (0, b"MM\x00*", "a TIFF image"),
    (0, b"%PDF", "a PDF document"),
    (0, b"PK\x03\x04", "a ZIP archive"),
    (0, b"ID3", "an MP3 audio file"),
    (0, b"fLaC", "a FLAC audio file"),
    (128, b"DICM", "a DICOM file (give it as --source dicom:PATH)"),
)

_CONTAINER_NAMES = {"mp4": "MP4/QuickTime", "avi": "AVI", "matroska": "Matroska/WebM",
                    "mpeg-ts": "MPEG transport stream", "mpeg-ps": "MPEG program stream", "ogg": "Ogg"}


def _check_file(path: Path) -> str | None:
    """Fail with a clear message for what is plainly not a video file; else the container kind
    the first bytes show (None when they show none FFmpeg might still recognise)."""
    if not path.exists():
        raise VideoError(f"video not found: {path} (check the path and the working folder)")
    if not path.is_file():
        raise VideoError(f"not a file: {path} (give the path of a video file)")
    if path.stat().st_size == 0:
        raise VideoError(f"video file is empty (0 bytes): {path} (re-copy or re-export the recording)")
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise VideoError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.name.endswith((".gxf_entities", ".gxf_index")):
        stem = path.with_name(path.name.rsplit(".", 1)[0])
        raise VideoError(f"{path} is part of a Holoscan recording, not a video file: give it as --source gxf:{stem}")
    for offset, magic, what in _NOT_VIDEO:
        if head[offset:offset + len(magic)] == magic and _really(what, head, path):
            still = ""
            if "image" in what:
                still = f": give still pictures as --source image:{path}"
            raise VideoError(f"{path} is {what}, not a video{_suffix_note(path)}{still}")
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        raise VideoError(f"{path} is a WAV audio file, not a video{_suffix_note(path)}")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        raise VideoError(f"{path} is a WebP image, not a video{_suffix_note(path)}: give still pictures as "
                         f"--source image:{path}")
    if _looks_like_text(head):  # its words are not quoted: they could be a patient's details
        raise VideoError(f"{path} is a text file, not a video{_suffix_note(path)}")
    return _container_kind(head)


_VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp",
                   ".ogv", ".mjpeg", ".h264", ".264"}


def _really(what: str, head: bytes, path: Path) -> bool:
    """Confirm a short signature: a BMP has a known header size; a JPEG followed by more JPEGs is
    a raw MJPEG stream (camera footage FFmpeg reads as video), not a still."""
    if what == "a BMP image":
        return len(head) >= 18 and struct.unpack("<I", head[14:18])[0] in (12, 40, 52, 56, 64, 108, 124)
    if what == "a JPEG image":
        with open(path, "rb") as f:
            return b"\xff\xd9\xff\xd8" not in f.read(16 << 20)
    return True


def _suffix_note(path: Path) -> str:
    return f", despite its {path.suffix} name" if path.suffix.lower() in _VIDEO_SUFFIXES else ""


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:  # possibly cut inside a character at the 512th byte
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return bool(text) and sum(c.isprintable() or c in "\r\n\t" for c in text) >= 0.95 * len(text)


def _container_kind(head: bytes) -> str | None:
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:1] == b"\x47" and len(head) > 376 and head[188] == 0x47 and head[376] == 0x47:
        return "mpeg-ts"
    if head[:4] == b"\x00\x00\x01\xba":
        return "mpeg-ps"
    if head[:4] == b"OggS":
        return "ogg"
    return None


def _why_unopenable(path: Path, container: str | None) -> str:
    """The message for a file FFmpeg (through OpenCV) would not open as video."""
    if container == "mp4":
        problem = _mp4_problem(path)
        if problem:
            return f"cannot read {path} as a video: {problem}"
    if container:
        return (f"cannot open {path} as a video: it is an {_CONTAINER_NAMES[container]} file, but FFmpeg finds no "
                "video stream it can decode in it (audio only, a damaged header, or a codec this build lacks)")
    with open(path, "rb") as f:
        head = f.read(16)
    return (f"cannot open {path} as a video: its first bytes ({head.hex(' ')}) match no video container "
            "(a malformed header, or not a video file)")


def _mp4_problem(path: Path) -> str | None:
    """Why an MP4/QuickTime file holds no readable video, from its top-level boxes; None if unclear."""
    size = path.stat().st_size
    boxes, offset = {}, 0
    with open(path, "rb") as f:
        while offset + 8 <= size:
            f.seek(offset)
            header = f.read(16)
            length, kind = struct.unpack(">I4s", header[:8])
            if length == 1 and len(header) == 16:
                length = struct.unpack(">Q", header[8:16])[0]
            elif length == 0:
                length = size - offset
            if length < 8:
                return f"its box structure is damaged at byte {offset} (a malformed header)"
            boxes[kind] = (offset, length)
            if offset + length > size:
                if kind == b"moov":
                    return ("the file is truncated inside its index ('moov' box): it ends at byte "
                            f"{size} of {offset + length}; re-copy or re-export the recording")
                break
            offset += length
        if b"moov" not in boxes:
            return ("it has no index ('moov' box), so no frame can be located: the recording was cut off "
                    "before it was finalised (a truncated file). Tools that rebuild the index from a good "
                    "file of the same camera (e.g. untrunc) may recover it")
        start, length = boxes[b"moov"]
        f.seek(start)
        moov = f.read(min(length, 64 << 20))
    handlers = set()
    at = moov.find(b"hdlr")
    while at >= 0:
        handlers.add(moov[at + 12:at + 16])
        at = moov.find(b"hdlr", at + 4)
    if b"vide" not in handlers:
        kinds = {b"soun": "audio", b"text": "text", b"sbtl": "subtitles", b"subt": "subtitles", b"hint": "hint"}
        tracks = sorted({kinds[h] for h in handlers if h in kinds}) or ["none"]
        return f"it has no video track (its tracks: {', '.join(tracks)})"
    return None


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any decoded picture (grey, BGR, BGRA; 8- or 16-bit) -> (H, W, 3) uint8 RGB.

    OpenCV's FFmpeg reader already delivers 8-bit BGR for 10- and 16-bit and greyscale video
    (scaled, not wrapped); the other cases are for cameras and other callers."""
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

    def write(self, frame_rgb: np.ndarray, index: int | None = None) -> None:
        """Append one picture; `index` (the frame's) is for writers that name pictures by it
        (media.images.StillWriter): a video's pictures are numbered by their order."""
        height, width = frame_rgb.shape[:2]
        if height % 2 or width % 2:
            frame_rgb = cv2.copyMakeBorder(frame_rgb, 0, height % 2, 0, width % 2, cv2.BORDER_REPLICATE)
            height, width = frame_rgb.shape[:2]
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (width, height))
            if not self._writer.isOpened():
                raise VideoError(f"cannot write video {self.path} with codec {self.fourcc}: check that the folder "
                                 "is writable and the codec (video_sink.fourcc) suits the file's suffix")
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

    def readable_frames(self) -> int:
        """Frames a reader finds in the closed file, from its index (0 for a file that cannot be
        opened: one whose disk filled before its index was written)."""
        if not self.frames_written:
            return 0
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        try:
            return int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        finally:
            capture.release()
