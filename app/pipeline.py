"""The holoburn graph. Reads like the diagram in ARCHITECTURE.md:

    source -> triage -> preprocess -> inference -> postprocess -> overlay -> recorder -> results
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from holoscan.core import Application
from holoscan.schedulers import EventBasedScheduler

from ..clinical.burn_size import region_tbsa_pct
from ..clinical.triage import Lane, LaneRouter, TriagePolicy
from ..engines.backend import Backend, open_backend
from ..engines.card import ModelCard, load_card
from ..media.video import VideoReader, VideoWriter
from ..operators.inference import InferenceOp
from ..operators.overlay import OverlayOp
from ..operators.postprocess import PostprocessOp
from ..operators.preprocess import PreprocessOp
from ..operators.records import RunLedger, write_json
from ..operators.sinks import OverlayVideoSinkOp, ResultsSinkOp
from ..operators.triage import TriageOp
from ..operators.video_source import VideoSourceOp

log = logging.getLogger("holoburn")


def parse_source(spec: str) -> tuple[str, str]:
    """'video:PATH' -> ('video', 'PATH'), with a clear error for anything else."""
    kind, sep, location = spec.partition(":")
    if not sep or not location:
        raise ValueError(f"source {spec!r}: give KIND:LOCATION, e.g. video:burns.mp4")
    if kind != "video":
        raise ValueError(f"source {spec!r}: kind {kind!r} is not supported yet; use video:PATH")
    return kind, location


@dataclass
class RunPlan:
    """Everything the graph needs, resolved and checked before the first frame."""

    config: dict
    out_dir: Path
    card: ModelCard
    backend: Backend
    reader: VideoReader
    source_id: str
    masks_dir: Path | None = None
    progress: object = None
    observers: tuple = ()
    keep_logits: bool = False
    ledger: RunLedger = field(default_factory=RunLedger)


def plan_run(config: dict, out_dir: Path, *, progress=None, observers=(), keep_logits=False) -> RunPlan:
    """Open the source and the model before the graph starts, so bad input fails at once."""
    src = config["source"]
    _, location = parse_source(src["location"])
    reader = VideoReader(location)
    card = load_card(config["inference"]["model"] or None)
    backend = open_backend(card, config["inference"]["backend"], config["inference"]["precision"],
                           threads=config["inference"]["threads"])
    masks = config["results"]["save_masks"]
    return RunPlan(config, Path(out_dir), card, backend, reader, f"video:{Path(location).name}",
                   Path(masks) if masks else None, progress, tuple(observers), keep_logits)


class BurnPipeline(Application):
    def __init__(self, plan: RunPlan, *args, **kwargs):
        self.plan = plan
        super().__init__(*args, **kwargs)

    def compose(self):
        plan, cfg = self.plan, self.plan.config
        src = cfg["source"]
        router = LaneRouter(
            defaults={plan.source_id: Lane.parse(src["lane"])},
            escalate=cfg["triage"]["escalate"],
            calm_frames=cfg["triage"]["calm_frames"],
        )
        policy = TriagePolicy(cfg["triage"]["partial_tbsa_threshold_pct"], cfg["triage"]["min_share_of_skin"])
        region = src["body_region"]
        region_pct = region_tbsa_pct(region, src["age_years"]) if region else None
        self.router = router

        source = VideoSourceOp(self, reader=plan.reader, source_id=plan.source_id, realtime=src["realtime"],
                               loop=src["loop"], max_frames=src["max_frames"], name="source")
        triage = TriageOp(self, router=router, name="triage")
        preprocess = PreprocessOp(self, input_size=plan.card.input_size, mean=plan.card.mean, std=plan.card.std,
                                  name="preprocess")
        inference = InferenceOp(self, backend=plan.backend, name="inference")
        postprocess = PostprocessOp(self, router=router, region_pct=region_pct, body_region=region,
                                    cm2_per_pixel=src["cm2_per_pixel"], policy=policy,
                                    keep_logits=plan.keep_logits, name="postprocess")
        overlay = OverlayOp(self, alpha=cfg["overlay"]["alpha"], name="overlay")
        recorder = OverlayVideoSinkOp(self, writer=VideoWriter(plan.out_dir / "overlay.mp4", plan.reader.fps,
                                                               cfg["video_sink"]["fourcc"]), name="recorder")
        results = ResultsSinkOp(self, results_path=plan.out_dir / "results.jsonl", ledger=plan.ledger,
                                backend=plan.backend.name, precision=plan.backend.precision,
                                masks_dir=plan.masks_dir, progress=plan.progress, observers=plan.observers,
                                name="results")
        self.source = source
        self.recorder = recorder

        chain = [source, triage, preprocess, inference, postprocess, overlay, recorder, results]
        for upstream, downstream in zip(chain, chain[1:]):
            self.add_flow(upstream, downstream)


def run_pipeline(plan: RunPlan) -> dict:
    """Run the graph to the end of the source; write and return the run summary."""
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    app = BurnPipeline(plan)
    app.scheduler(EventBasedScheduler(app, worker_thread_number=plan.config["scheduler"]["worker_threads"],
                                      stop_on_deadlock=True, name="scheduler"))
    started = time.time()
    app.run()
    summary = {
        "source": plan.source_id,
        "model_id": plan.card.model_id,
        "model_sha256": plan.card.model_sha256(),
        **plan.backend.describe(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        **plan.ledger.summary(),
        "missing_from_container": app.source.missing,
        "overlay_frames": app.recorder.writer.frames_written,
        "overlay_size": app.recorder.writer.size,
        "lane_changes": app.router.changes,
        "outputs": {"results": "results.jsonl", "overlay": "overlay.mp4", "summary": "summary.json",
                    "masks": str(plan.masks_dir) if plan.masks_dir else None},
    }
    if summary["overlay_frames"] != summary["processed"]:
        raise RuntimeError(f"overlay video has {summary['overlay_frames']} frames for {summary['processed']} processed")
    write_json(plan.out_dir / "summary.json", summary)
    return summary
