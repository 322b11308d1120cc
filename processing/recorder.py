"""The one results writer: every frame that leaves the graph, from every source and lane.

Writes results.jsonl (one record per frame, each source in frame order, dropped frames in their
place), each source's overlay video (a NO SIGNAL picture for a camera gap) and, on request, the
predicted masks; keeps the run's ledger; hands each frame with its record to the observers
(validation scorer, metrics endpoint, DICOM export) in the same order.

Frames of one source can arrive out of order (escalation lets a later frame overtake an earlier
one queued in a slower lane): a reorder buffer per source puts them back. With several sources
or a GPU, encoding 1080p overlays takes longer than a frame period, so each source's pictures are
written by a thread of its own (OpenCV lets go of the GIL), never by the graph's workers; one
source on a 2-core CPU writes them in the results operator (a thread there cost 6 % of the frame
rate: `holoburn bench --cpu`, 36.0 against 38.2 fps).
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
from holoburn.media.video import VideoWriter
from holoburn.processing.frame import NO_SIGNAL, Frame
from holoburn.processing.ledger import Ledger
from holoburn.processing.records import result_record

log = logging.getLogger("holoburn.results")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:60] or "source"


@dataclass(frozen=True)
class SourceOutput:
    """What the writer needs to know of a source before its first frame."""

    source_id: str
    fps: float = 30.0
    size: tuple | None = None  # (height, width) when known: NO SIGNAL pictures before any frame


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
        self.overlay_names = {s.source_id: "overlay.mp4" if single else f"overlay_{slug(s.source_id)}.mp4"
                              for s in sources}
        self.masks_dir = Path(masks_dir) if masks_dir else None
        self.mask_dirs = {s.source_id: (self.masks_dir if single else self.masks_dir / slug(s.source_id))
                          for s in sources} if self.masks_dir else {}
        self.observers = tuple(observers)
        self.progress = progress
        self.backend = dict(backend or {})  # backend, precision, ... for every record
        self.backend_seen: dict = {}  # as the lanes reported it (the model may run in another process)
        self.ledger = Ledger()
        self.no_signal_written = dict.fromkeys(self.sources, 0)
        self.write_errors: list[str] = []
        self._results = open(self.out_dir / "results.jsonl", "w", buffering=1)
        self._next = dict.fromkeys(self.sources, 0)
        self._pending: dict[str, dict[int, tuple]] = {sid: {} for sid in self.sources}
        self._size = {sid: s.size for sid, s in self.sources.items()}
        self._lock = threading.Lock()
        self.writers = {sid: VideoWriter(self.out_dir / self.overlay_names[sid], s.fps or 30.0, fourcc)
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
        """A frame leaves the graph (processed or dropped): account it now, write it in order."""
        latency_ms = self.ledger.add(frame, done_ns, trace, gpu_ms)
        if frame.extra.get("backend"):
            self.backend_seen = frame.extra["backend"]
        frame.overlay, frame.mask = to_host(frame.overlay), to_host(frame.mask)
        frame.logits = to_host(frame.logits)
        with self._lock:
            if frame.source not in self._pending:  # a source the writer was not told of: still written
                self._pending[frame.source], self._next[frame.source] = {}, frame.index
            self._pending[frame.source][frame.index] = (frame, latency_ms)
            self._flush(frame.source)

    def _flush(self, source: str, everything: bool = False) -> None:
        pending = self._pending[source]
        while pending:
            index = self._next[source]
            if index not in pending:
                if not everything:
                    return
                index = min(pending)
            frame, latency_ms = pending.pop(index)
            self._next[source] = index + 1
            record = result_record(frame, latency_ms, frame.extra.get("backend") or self.backend)
            self._results.write(json.dumps(record) + "\n")
            picture = frame.overlay if frame.ok else self._no_signal(frame)
            if frame.ok and picture is not None:
                self._size[source] = picture.shape[:2]
            mask = frame.mask if frame.ok else None
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
        if frame.status != NO_SIGNAL:
            return None
        self.no_signal_written[frame.source] = self.no_signal_written.get(frame.source, 0) + 1
        return no_signal(*(self._size.get(frame.source) or (480, 640)))

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
            self.writers[source].write(overlay)
            self._save_mask(source, index, mask)
        except OSError as exc:  # a full disk or a vanished folder: reported in the summary, never silent
            self.write_errors.append(f"{source} frame {index}: {exc}")

    def close(self) -> None:
        """Write what is still held (frames whose predecessors never came), close every file."""
        with self._lock:
            for source in self._pending:
                self._flush(source, everything=True)
        self._results.close()
        for pictures in self._pictures.values():
            pictures.put(None)
        for thread in self._threads:
            thread.join()
        for writer in self.writers.values():
            writer.close()
        self.ledger.finished = time.monotonic()

    def overlay_frames(self, source: str) -> int:
        writer = self.writers.get(source)
        return writer.frames_written if writer else 0
