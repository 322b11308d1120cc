"""The one results writer: every frame that leaves the graph, from every source and lane.

Writes results.jsonl (one record per frame, each source in frame order, dropped frames in their
place), each source's overlay video (a NO SIGNAL picture for a camera gap; for still pictures one
PNG per frame instead, `overlays/image-1_000003.png`) and, on request, the predicted masks; keeps
the run's ledger; hands each frame with its record to the observers (validation scorer, metrics
endpoint, DICOM export) in the same order.

Frames of one source can arrive out of order (escalation lets a later frame overtake an earlier
one queued in a slower lane): a reorder buffer per source puts them back. With several sources
or a GPU, encoding 1080p overlays takes longer than a frame period, so each source's pictures are
written by a thread of its own (OpenCV lets go of the GIL), never by the graph's workers; one
source on a 2-core CPU writes them in the results operator (a thread there cost 6 % of the frame
rate: `holoburn bench --cpu`, 36.0 against 38.2 fps).

A disk that fills up stops the run cleanly. Before each frame is written, the writer checks that
its pictures still fit with HEADROOM to spare (what closing the overlays, the last results lines
and summary.json take). When they do not, it keeps the error in `full` (the results operator then
stops the sources) and writes no more pictures: this frame and the frames still on their way are
recorded as dropped, OUTPUT_FULL, in their place. A results line the disk cannot take is taken
back, and then nothing more is written. So results.jsonl ends with a whole line, every processed
record has its picture in a closed, playable overlay, and the ledger counts exactly the records;
`not_written` counts frames that have none.
"""
from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from holoburn.clinical.overlay import no_signal
from holoburn.media.images import StillWriter
from holoburn.media.video import VideoWriter
from holoburn.processing.files import LineFile, OutputFull, disk_free, file_room
from holoburn.processing.frame import NO_SIGNAL, Frame
from holoburn.processing.ledger import Ledger, frame_latency_ms
from holoburn.processing.records import result_record

log = logging.getLogger("holoburn.results")

#: bytes kept free when the run stops for lack of room: the last results lines, summary.json
HEADROOM = 256 << 10
#: bytes of an overlay written but not yet on disk (FFmpeg, through OpenCV, writes 256 KiB at a time)
OVERLAY_BUFFER = 256 << 10
#: bytes of an MP4 index per frame written (sample size, offset, key-frame and timing entries)
INDEX_BYTES_PER_FRAME = 32
OUTPUT_FULL = "output_full"  # Frame.status of a frame recorded without its pictures: no room left


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:60] or "source"


STILLS_FOLDER = "overlays"  # a still-picture source's overlays: one PNG per frame


def still_prefix(source_id: str) -> str:
    """`image:1` -> `image-1`: how a still-picture source's overlay files begin."""
    return slug(source_id.replace(":", "-"))


@dataclass(frozen=True)
class SourceOutput:
    """What the writer needs to know of a source before its first frame."""

    source_id: str
    fps: float = 30.0
    size: tuple | None = None  # (height, width) when known: NO SIGNAL pictures before any frame
    stills: bool = False  # still pictures, each at its own size: one overlay PNG per frame, not a video


def to_host(array):
    """A NumPy view or copy of a NumPy or CuPy array (None stays None)."""
    if array is None or isinstance(array, np.ndarray):
        return array
    return array.get()


class RunRecorder:
    def __init__(self, out_dir: Path, sources: list[SourceOutput], *, fourcc: str = "mp4v",
                 masks_dir: Path | None = None, observers=(), progress=None, backend: dict | None = None,
                 picture_threads: bool = True):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.sources = {s.source_id: s for s in sources}
        single = len(sources) == 1
        self.overlay_names = {s.source_id: f"{STILLS_FOLDER}/{still_prefix(s.source_id)}_*.png" if s.stills
                              else "overlay.mp4" if single else f"overlay_{slug(s.source_id)}.mp4" for s in sources}
        self.masks_dir = Path(masks_dir) if masks_dir else None
        self.mask_dirs = {s.source_id: (self.masks_dir if single else self.masks_dir / slug(s.source_id))
                          for s in sources} if self.masks_dir else {}
        self.observers = tuple(observers)
        self.progress = progress
        self.backend = dict(backend or {})  # backend, precision, ... for every record
        self.backend_seen: dict = {}  # as the lanes reported it (the model may run in another process)
        # no per-frame trips: a run's summary does not read them, and kept for every frame they
        # grew a camera run's memory by about 1 KiB a frame (holoburn bench --soak)
        self.ledger = Ledger(keep_trips=0)
        self.no_signal_written = dict.fromkeys(self.sources, 0)
        self.write_errors: list[str] = []
        self.full: OutputFull | None = None  # no room for more pictures: frames are recorded without them
        self.not_written = 0  # frames that reached the writer but have no record (not even a line fitted)
        self._results = LineFile(self.out_dir / "results.jsonl")
        self._next = dict.fromkeys(self.sources, 0)
        self._pending: dict[str, dict[int, tuple]] = {sid: {} for sid in self.sources}
        self._size = {sid: s.size for sid, s in self.sources.items()}
        self._lock = threading.Lock()
        self.writers = {sid: StillWriter(self.out_dir / STILLS_FOLDER, still_prefix(sid)) if s.stills
                        else VideoWriter(self.out_dir / self.overlay_names[sid], s.fps or 30.0, fourcc)
                        for sid, s in self.sources.items()}
        self._pictures = {}
        self._threads = []
        if picture_threads:
            self._pictures = {sid: queue.Queue(maxsize=64) for sid in self.sources}
            self._threads = [threading.Thread(target=self._write_pictures, args=(sid,), daemon=True,
                                              name=f"writer-{slug(sid)}") for sid in self.sources]
            for thread in self._threads:
                thread.start()

    def add(self, frame: Frame, done_ns: int | None = None, trace=(), gpu_ms=None) -> None:
        """A frame leaves the graph (processed or dropped): write it in order, and account it
        when its record is written."""
        if frame.extra.get("backend"):
            self.backend_seen = frame.extra["backend"]
        frame.overlay, frame.mask = to_host(frame.overlay), to_host(frame.mask)
        frame.logits = to_host(frame.logits)
        with self._lock:
            if self._results is None:  # not even a results line fits
                self.not_written += 1
                return
            if frame.source not in self._pending:  # a source the writer was not told of: still written
                self._pending[frame.source], self._next[frame.source] = {}, frame.index
            self._pending[frame.source][frame.index] = (frame, done_ns, trace, gpu_ms)
            self._flush_or_stop(frame.source)

    def _flush_or_stop(self, source: str, everything: bool = False) -> None:
        try:
            self._flush(source, everything)
        except OutputFull as exc:  # a results line did not fit: it was taken back; write nothing more
            self.full = self.full or exc
            self.not_written += sum(len(pending) for pending in self._pending.values())
            for pending in self._pending.values():
                pending.clear()
            self._results.close()
            self._results = None

    def _flush(self, source: str, everything: bool = False) -> None:
        pending = self._pending[source]
        while pending:
            index = self._next[source]
            if index not in pending:
                if not everything:
                    return
                index = min(pending)
            frame, done_ns, trace, gpu_ms = pending[index]
            if self.full is None:
                try:
                    self._make_room(source, frame)
                except OutputFull as exc:
                    self.full = exc
            if self.full is not None:
                frame.drop(OUTPUT_FULL)
                frame.mask = None
            picture = frame.overlay if frame.ok else self._no_signal(frame)
            mask = frame.mask if frame.ok else None
            now = time.monotonic_ns()
            record = result_record(frame, frame_latency_ms(frame, done_ns, now),
                                   frame.extra.get("backend") or self.backend)
            self._results.write_line(json.dumps(record))
            del pending[index]
            self._next[source] = index + 1
            self.ledger.add(frame, done_ns, trace, gpu_ms, now_ns=now)
            if frame.status == NO_SIGNAL and picture is not None:
                self.no_signal_written[source] = self.no_signal_written.get(source, 0) + 1
            if frame.ok and picture is not None:
                self._size[source] = picture.shape[:2]
            if self._pictures and picture is not None:
                self._pictures[source].put((frame.index, picture, mask))
            elif picture is not None:
                self._write_picture(source, frame.index, picture, mask)
            elif mask is not None:
                self._save_mask(source, frame.index, mask)
            for observe in self.observers:
                observe(frame, record)
            if self.progress:
                self.progress(self.ledger.frames_in)

    def _no_signal(self, frame: Frame):
        """A camera gap is shown, not hidden: NO SIGNAL at the source's picture size."""
        if frame.status != NO_SIGNAL or self.full is not None:
            return None
        return no_signal(*self._picture_size(frame.source))

    def _make_room(self, source: str, frame: Frame) -> None:
        """OutputFull unless this frame's outputs fit, with room to spare for what closing the run
        writes: each overlay's buffered bytes, its index and the pictures queued for it (counted
        uncompressed: more than MPEG-4 makes of them), the last results lines, summary.json."""
        queued = {sid: pictures.qsize() for sid, pictures in self._pictures.items()}
        takes = {sid: OVERLAY_BUFFER + INDEX_BYTES_PER_FRAME * (writer.frames_written + queued.get(sid, 0) + 1)
                 + queued.get(sid, 0) * self._picture_bytes(sid) for sid, writer in self.writers.items()}
        if source in takes and (frame.ok or frame.status == NO_SIGNAL):
            takes[source] += frame.overlay.nbytes if frame.overlay is not None else self._picture_bytes(source)
        masks = self.mask_dirs.get(source)
        mask = frame.mask.nbytes if frame.mask is not None and masks is not None else 0
        overlay = self.writers.get(source)
        for path, need in ((self._results.path, HEADROOM), (overlay and overlay.path, takes.get(source, 0)),
                           (masks and masks / "mask.png", mask)):
            room = file_room(path) if path is not None else None
            if room is not None and room < need:
                raise OutputFull(f"{path} cannot grow by the {need} bytes the next frame needs: the file-size "
                                 "limit (ulimit -f) is reached")
        need = HEADROOM + sum(takes.values()) + mask
        for folder in {self.out_dir, masks} - {None}:
            if disk_free(folder) < need:
                raise OutputFull(f"the disk holding {folder} is full: it has less than the {need} bytes free "
                                 "that the next frame needs")

    def _picture_bytes(self, source: str) -> int:
        height, width = self._picture_size(source)
        return height * width * 3

    def _picture_size(self, source: str) -> tuple:
        return self._size.get(source) or (480, 640)

    def _save_mask(self, source: str, index: int, mask) -> None:
        folder = self.mask_dirs.get(source)
        if folder is None or mask is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(folder / f"{index:06d}.png"), mask):
            raise OSError(f"cannot write mask {folder / f'{index:06d}.png'}")

    def _write_pictures(self, source: str) -> None:
        while (item := self._pictures[source].get()) is not None:
            self._write_picture(source, *item)

    def _write_picture(self, source: str, index: int, overlay, mask) -> None:
        try:
            self.writers[source].write(overlay, index)
            self._save_mask(source, index, mask)
        except OSError as exc:  # a full disk or a vanished folder: reported in the summary, never silent
            self.write_errors.append(f"{source} frame {index}: {exc}")

    def close(self, emitted: dict[str, int] | None = None, reason: str = "interrupted") -> None:
        """Write what is still held (frames whose predecessors never came), close every file;
        an overlay that does not read back whole is a write error.

        emitted: frames each source emitted (indices 0..n-1). A frame that never came back from the
        graph (a stop signal ended it with the frame in flight) is recorded as dropped with
        `reason`: every frame a source emitted has its line in results.jsonl."""
        with self._lock:
            for source, count in (emitted or {}).items():
                pending = self._pending.setdefault(source, {})
                start = self._next.setdefault(source, 0)
                fps = getattr(self.sources.get(source), "fps", 0.0) or 0.0
                for index in range(start, count):
                    if index not in pending:
                        lost = Frame.of(source, index, index / fps if fps else 0.0).drop(reason)
                        pending[index] = (lost, None, (), None)
            for source in self._pending:
                if self._results is not None:
                    self._flush_or_stop(source, everything=True)
            if self._results is not None:
                self._results.close()
        for pictures in self._pictures.values():
            pictures.put(None)
        for thread in self._threads:
            thread.join()
        for source, writer in self.writers.items():
            writer.close()
            readable = writer.readable_frames()
            if readable != writer.frames_written:
                self.write_errors.append(f"{source}: {writer.path.name} reads back {readable} of the "
                                         f"{writer.frames_written} frames written to it")
        self.ledger.finished = time.monotonic()

    def overlay_frames(self, source: str) -> int:
        writer = self.writers.get(source)
        return writer.frames_written if writer else 0
