"""`holoburn run` with several `--source KIND:LOCATION[@LANE]`: the priority-lanes graph
(app/lanes.py) over real sources, one results file, one overlay video per source.

Recordings play at their own frame rate, as cameras would deliver them. Each source starts in its lane (default: the config's `source.lane`); triage escalates a source to
EMERGENCY on a referral-grade result and back after its calm period. The lanes serve the most
urgent frame first (on a GPU each lane has its own CUDA streams and memory; on the CPU one queue
is ordered by priority). A routine lane that falls behind drops its oldest frame, counted with
its reason. Frames of one source are written in frame order, dropped ones included.
"""
from __future__ import annotations

import json
import queue
import re
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from holoburn.clinical.burn_size import region_tbsa_pct
from holoburn.clinical.triage import Lane, TriagePolicy
from holoburn.engines.backend import cuda_available, open_backend
from holoburn.engines.card import load_card
from holoburn.media.video import VideoWriter
from holoburn.processing.runtime import SourceFacts
from holoburn.processing.records import RunLedger, result_record, write_json
from holoburn.app.lanes import LanesPlan, build_router, build_runtimes, lane_policies, lanes_in_use, load_lanes_config, run_lanes
from holoburn.app.run.sources import open_reader, parse_source, source_id


def parse_lane_spec(spec: str, default_lane: str) -> tuple[str, Lane]:
    """'video:a.mp4@EMERGENCY' -> ('video:a.mp4', Lane.EMERGENCY)."""
    location, sep, lane = spec.rpartition("@")
    if sep and lane.upper() in Lane.__members__:
        return location, Lane[lane.upper()]
    return spec, Lane.parse(default_lane)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:60] or "source"


def overlay_name(source: str, sources: int) -> str:
    return "overlay.mp4" if sources == 1 else f"overlay_{slug(source)}.mp4"


class SourcesRecorder:
    """Writes every frame that leaves the lane graph: results.jsonl, each source's overlay video
    and masks, in each source's frame order (a per-source reorder buffer: escalation can let a
    later frame of a source overtake an earlier one queued in a slower lane)."""

    def __init__(self, out_dir: Path, sources: dict[str, float], masks_dir: Path | None, fourcc: str, progress=None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.results = open(self.out_dir / "results.jsonl", "w", buffering=1)
        self.overlay_names = {sid: overlay_name(sid, len(sources)) for sid in sources}
        self.writers = {sid: VideoWriter(self.out_dir / self.overlay_names[sid], fps, fourcc) for sid, fps in sources.items()}
        # encoding a 1080p overlay takes longer than a frame period: each source's pictures are
        # written by a thread of its own (OpenCV lets go of the GIL), not by the graph's workers
        self._pictures = {sid: queue.Queue(maxsize=64) for sid in sources}
        self._threads = [threading.Thread(target=self._write_pictures, args=(sid,), daemon=True, name=f"writer-{slug(sid)}")
                         for sid in sources]
        self._errors: list[str] = []
        self.masks_dir = Path(masks_dir) if masks_dir else None
        self.ledgers = {sid: RunLedger() for sid in sources}
        self.total = RunLedger()
        self._next = dict.fromkeys(sources, 0)
        self._pending: dict[str, dict[int, tuple]] = {sid: {} for sid in sources}
        self._lock = threading.Lock()
        self.progress = progress
        self.backend_info: dict = {}  # backend, version, precision, device, model id, for every record
        for thread in self._threads:
            thread.start()

    def __call__(self, frame, done_ns) -> None:
        latency_ms = ((done_ns or time.monotonic_ns()) - frame.entered_ns) / 1e6
        frame.backend = frame.backend or self.backend_info
        overlay = frame.overlay
        if overlay is not None and not isinstance(overlay, np.ndarray):
            overlay = overlay.get()  # a device array (GPU lanes)
        mask = frame.mask
        if mask is not None and not isinstance(mask, np.ndarray):
            mask = mask.get()
        item = (frame, result_record(frame, latency_ms), latency_ms, overlay, mask)
        with self._lock:
            self._pending[frame.source][frame.index] = item
            self._flush(frame.source)

    def _flush(self, source: str, everything: bool = False) -> None:
        pending = self._pending[source]
        while pending:
            index = self._next[source]
            if index not in pending:
                if not everything:
                    return
                index = min(pending)
            frame, record, latency_ms, overlay, mask = pending.pop(index)
            self._next[source] = index + 1
            self.results.write(json.dumps(record) + "\n")
            self.ledgers[source].add(frame, latency_ms)
            self.total.add(frame, latency_ms)
            if frame.ok:
                self._pictures[source].put((frame.index, overlay, mask))
            if self.progress:
                self.progress(self.total.frames_in)

    def _write_pictures(self, source: str) -> None:
        folder = None
        if self.masks_dir is not None:
            folder = self.masks_dir if len(self.writers) == 1 else self.masks_dir / slug(source)
        while True:
            item = self._pictures[source].get()
            if item is None:
                return
            index, overlay, mask = item
            try:
                if overlay is not None:
                    self.writers[source].write(overlay)
                if folder is not None and mask is not None:  # one source: masks straight in the folder
                    folder.mkdir(parents=True, exist_ok=True)
                    if not cv2.imwrite(str(folder / f"{index:06d}.png"), mask):
                        raise OSError(f"cannot write mask {folder / f'{index:06d}.png'}")
            except Exception as exc:  # reported in the summary, never silently lost
                self._errors.append(f"{source} frame {index}: {exc}")

    def close(self) -> list[str]:
        """Flush everything; returns the errors of the picture writers (empty when none)."""
        with self._lock:
            for source in self._pending:
                self._flush(source, everything=True)
        self.results.close()
        for source, pictures in self._pictures.items():
            pictures.put(None)
        for thread in self._threads:
            thread.join()
        for writer in self.writers.values():
            writer.close()
        return self._errors


def replay_sources(config: dict, specs: list[str], out_dir: Path, progress=None, device: str | None = None) -> dict:
    """Run sources through the lanes graph; write results, overlays and summary.json.

    Several sources: the gated lanes (queues, priorities, drops). One source: its lane's chain
    straight through with back-pressure (nothing dropped), the device path of a single camera or
    recording on a GPU, with the output contract of `holoburn run`."""
    src, inference, tri = config["source"], config["inference"], config["triage"]
    card = load_card(inference["model"] or None)
    device = device or ("cuda" if cuda_available() and inference["backend"] in ("auto", "torch", "tensorrt") else "cpu")
    single = len(specs) == 1
    region = src["body_region"]
    facts = SourceFacts(region_tbsa_pct(region, src["age_years"]) if region else None, region, src["cm2_per_pixel"])
    sources, fps = [], {}
    from holoburn.app.lanes import SourceSpec

    for spec in specs:
        location, lane = parse_lane_spec(spec, src["lane"])
        if parse_source(location)[0] == "gxf":
            raise ValueError(f"source {spec}: Holoscan recordings replay one at a time; convert others to video")
        if any(s.reader.path == Path(parse_source(location)[1]) for s in sources):
            raise ValueError(f"source {spec} is given twice")
        reader = open_reader(location, config)
        sid = source_id(location)
        if sid in fps:  # two files of the same name in different folders
            sid = f"{sid}#{len(sources) + 1}"
        fps[sid] = reader.fps or 30.0
        # several sources are cameras side by side: recordings play at their own pace (as a camera
        # delivers frames), so a lane that cannot keep up drops its oldest frames, counted
        sources.append(SourceSpec(sid, [], lane, fps=None, count=src["max_frames"], facts=facts, reader=reader,
                                  realtime=bool(src["realtime"]) if single else True))
    lanes_config = load_lanes_config(None)
    policies = lane_policies(lanes_config)
    router = build_router(sources, tri)
    used = [sources[0].lane] if single else lanes_in_use(sources, router)
    sizes = tuple({(s.reader.height, s.reader.width) for s in sources if getattr(s.reader, "height", 0)}) or ((1080, 1920),)
    # an ungated chain holds as many batches as its operators and their queues can: one buffer set
    # each (in the lab, 1080p with only the lane's own depth failed 48 of 90 frames for want of one)
    extra = {sources[0].lane: 10} if single and device == "cuda" else None
    runtimes, priorities = build_runtimes(
        used, policies, device=device, card=card, router=router, sources=sources, frame_sizes=sizes, extra_slots=extra,
        triage=TriagePolicy(tri["partial_tbsa_threshold_pct"], tri["min_share_of_skin"]), alpha=config["overlay"]["alpha"],
        open_backend_for=lambda lane: open_backend(card, inference["backend"], inference["precision"], device,
                                                   threads=inference["threads"]))
    recorder = SourcesRecorder(out_dir, fps, config["results"]["save_masks"], config["video_sink"]["fourcc"], progress)
    backend = next(iter(runtimes.values())).backend
    recorder.backend_info = {**backend.describe(), "model_id": card.model_id}
    plan = LanesPlan(sources=sources, policies=policies, runtimes=runtimes, router=router, device=device,
                     mode="chain" if single else "lanes",
                     config=lanes_config, priorities=priorities, on_frame=recorder)
    started = time.time()
    try:
        lanes_summary = run_lanes(plan)
    finally:
        write_errors = recorder.close()
    summary = {
        "sources": {sid: {"lane": s.lane.name, **recorder.ledgers[sid].summary(),
                          "overlay": recorder.overlay_names[sid], "overlay_frames": recorder.writers[sid].frames_written}
                    for sid, s in zip(fps, sources)},
        "overlay_frames": sum(w.frames_written for w in recorder.writers.values()),
        "model_id": card.model_id,
        "model_sha256": card.model_sha256(),
        **backend.describe(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        **recorder.total.summary(),
        "lane_changes": router.changes,
        "write_errors": write_errors,
        "lanes": lanes_summary.get("chains"),
        "outputs": {"results": "results.jsonl", "summary": "summary.json",
                    "overlays": list(recorder.overlay_names.values())},
    }
    emitted = sum(int(v.get("emitted", 0)) for v in lanes_summary["sources"].values())
    if emitted != summary["frames_in"]:
        raise RuntimeError(f"frame accounting broken: {emitted} frames emitted by the sources, "
                           f"{summary['frames_in']} written")
    write_json(Path(out_dir) / "summary.json", summary)
    return summary
