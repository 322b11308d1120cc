"""The holoburn graph. Reads like the diagram in ARCHITECTURE.md:

    source -> triage -> preprocess -> inference -> postprocess -> overlay -> recorder -> results
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from holoscan.core import Application, Fragment
from holoscan.operators import VideoStreamRecorderOp, VideoStreamReplayerOp
from holoscan.schedulers import EventBasedScheduler

from holoburn.clinical.burn_size import region_tbsa_pct
from holoburn.clinical.triage import Lane, LaneRouter, TriagePolicy
from holoburn.engines.backend import Backend, open_backend
from holoburn.engines.card import ModelCard, load_card
from holoburn.engines.precision import PrecisionModelMissing
from holoburn.media.video import VideoWriter
from holoburn.operators.inference import InferenceOp
from holoburn.operators.overlay import OverlayOp
from holoburn.operators.postprocess import PostprocessOp
from holoburn.operators.preprocess import PreprocessOp
from holoburn.processing.records import RunLedger, write_json
from holoburn.operators.sinks import OverlayVideoSinkOp, ResultsSinkOp
from holoburn.operators.triage import TriageOp
from holoburn.operators.frame_source import FrameSourceOp
from holoburn.operators.gxf_io import FrameToTensorOp, TensorToFrameOp
from holoburn.app.run.engine_setup import ensure_engine
from holoburn.app.run.sources import gxf_recording, open_reader, parse_source, source_id

log = logging.getLogger("holoburn")


@dataclass
class RunPlan:
    """What the graph needs. `plan_run` opens the source and the model before the graph starts
    (bad input fails at once); in a distributed run each process opens only what its fragment
    needs, when the fragment is composed."""

    config: dict
    out_dir: Path
    card: ModelCard | None = None
    backend: Backend | None = None
    reader: object = None  # media.video reader interface
    source_id: str = ""
    progress: object = None
    observers: tuple = ()
    keep_logits: bool = False
    ledger: RunLedger = field(default_factory=RunLedger)
    exporter: object = None  # DICOM results export, for DICOM sources

    def __post_init__(self):
        audit = Path(self.config["dicom"]["audit_log"])
        if not audit.is_absolute():  # the audit log of a run lives with its results
            self.config = {**self.config, "dicom": {**self.config["dicom"], "audit_log": str(self.out_dir / audit)}}
        location = self.config["source"]["location"]
        if not self.source_id and location:
            self.source_id = source_id(location)

    @property
    def source_kind(self) -> str:
        return parse_source(self.config["source"]["location"])[0]

    @property
    def masks_dir(self) -> Path | None:
        masks = self.config["results"]["save_masks"]
        return Path(masks) if masks else None

    def open_reader(self):
        """The source's frame reader (None for Holoscan recordings, which replay through Holoscan)."""
        if self.reader is None:
            location = self.config["source"]["location"]
            if self.source_kind == "gxf":
                gxf_recording(parse_source(location)[1])  # fail now if the files are missing
            else:
                self.reader = open_reader(location, self.config)
        return self.reader

    def open_model(self) -> tuple[ModelCard, Backend]:
        inference = self.config["inference"]
        if self.card is None:
            self.card = load_card(inference["model"] or None)
        if self.backend is None:
            try:
                self.backend = open_backend(self.card, inference["backend"], inference["precision"],
                                            threads=inference["threads"])
            except PrecisionModelMissing:
                if not inference["build_missing"]:
                    raise
                ensure_engine(self.card, inference["backend"], inference["precision"], inference)
                self.backend = open_backend(self.card, inference["backend"], inference["precision"],
                                            threads=inference["threads"])
        return self.card, self.backend


def plan_run(config: dict, out_dir: Path, *, progress=None, observers=(), keep_logits=False) -> RunPlan:
    """Open the source and the model before the graph starts, so bad input fails at once."""
    plan = RunPlan(config, Path(out_dir), progress=progress, observers=tuple(observers), keep_logits=keep_logits)
    plan.open_model()
    reader = plan.open_reader()
    if plan.source_kind == "dicom" and config["dicom"]["export"]:
        from holoburn.app.run.dicom import DicomExporter

        plan.exporter = DicomExporter(plan.out_dir / "dicom", reader.audit)
        plan.observers = (*plan.observers, plan.exporter)
    return plan


def capture_stage(fragment, plan: RunPlan) -> list:
    """source: frames in, each with source id, index and timestamp (and, with record_gxf, a
    Holoscan recording of the input frames on the side)."""
    src, cfg = plan.config["source"], plan.config
    if plan.source_kind == "gxf":
        directory, basename = gxf_recording(parse_source(src["location"])[1])
        replayer = VideoStreamReplayerOp(fragment, directory=str(directory), basename=basename, frame_rate=0.0,
                                         realtime=bool(src["realtime"]), repeat=bool(src["loop"]),
                                         count=int(src["max_frames"] or 0), name="replayer")
        stages = [replayer, TensorToFrameOp(fragment, source_id=plan.source_id, fps=cfg["gxf"]["fps"], name="source")]
        fragment.add_flow(*stages)
    else:
        fragment.source = FrameSourceOp(fragment, reader=plan.open_reader(), source_id=plan.source_id,
                                        realtime=src["realtime"], loop=src["loop"], max_frames=src["max_frames"],
                                        name="source")
        stages = [fragment.source]
    if cfg["results"]["record_gxf"]:
        target = Path(cfg["results"]["record_gxf"])
        target.parent.mkdir(parents=True, exist_ok=True)
        to_tensor = FrameToTensorOp(fragment, name="record_tensor")
        fragment.add_flow(stages[-1], to_tensor)
        fragment.add_flow(to_tensor, VideoStreamRecorderOp(fragment, directory=str(target.parent),
                                                           basename=target.name, name="gxf_recorder"))
    return stages


def analysis_stage(fragment, plan: RunPlan) -> list:
    """triage -> preprocess -> inference -> postprocess: class mask, burn size, triage level."""
    cfg = plan.config
    src, tri = cfg["source"], cfg["triage"]
    card, backend = plan.open_model()
    router = LaneRouter(defaults={plan.source_id: Lane.parse(src["lane"])}, escalate=tri["escalate"],
                        calm_frames=tri["calm_frames"])
    region = src["body_region"]
    fragment.router = router
    return [
        TriageOp(fragment, router=router, name="triage"),
        PreprocessOp(fragment, input_size=card.input_size, mean=card.mean, std=card.std, name="preprocess"),
        InferenceOp(fragment, backend=backend, model_id=card.model_id, name="inference"),
        PostprocessOp(fragment, router=router, body_region=region,
                      region_pct=region_tbsa_pct(region, src["age_years"]) if region else None,
                      cm2_per_pixel=src["cm2_per_pixel"],
                      policy=TriagePolicy(tri["partial_tbsa_threshold_pct"], tri["min_share_of_skin"]),
                      keep_logits=plan.keep_logits, name="postprocess"),
    ]


def display_stage(fragment, plan: RunPlan) -> list:
    """overlay -> recorder (overlay video) -> results (JSON lines, masks, accounting)."""
    cfg = plan.config
    fragment.recorder = OverlayVideoSinkOp(
        fragment, writer=VideoWriter(plan.out_dir / "overlay.mp4", 30.0, cfg["video_sink"]["fourcc"]), name="recorder")
    return [
        OverlayOp(fragment, alpha=cfg["overlay"]["alpha"], name="overlay"),
        fragment.recorder,
        ResultsSinkOp(fragment, results_path=plan.out_dir / "results.jsonl", ledger=plan.ledger,
                      masks_dir=plan.masks_dir, progress=plan.progress, observers=plan.observers, name="results"),
    ]


def chain(fragment, operators: list) -> None:
    """add_flow between neighbours (Holoscan ignores a flow it already has)."""
    if len(operators) == 1:
        fragment.add_operator(operators[0])
    for upstream, downstream in zip(operators, operators[1:]):
        fragment.add_flow(upstream, downstream)


class BurnPipeline(Application):
    """The whole graph in one process."""

    def __init__(self, plan: RunPlan, *args, **kwargs):
        self.plan = plan
        self.source = self.router = self.recorder = None
        super().__init__(*args, **kwargs)

    def compose(self):
        chain(self, capture_stage(self, self.plan) + analysis_stage(self, self.plan) + display_stage(self, self.plan))


class _StageFragment(Fragment):
    def __init__(self, app, stage, *args, **kwargs):
        self.app_ref, self.stage = app, stage
        self.source = self.router = self.recorder = None
        super().__init__(app, *args, **kwargs)

    def compose(self):
        self.app_ref.composed[self.name] = self
        chain(self, self.stage(self))


class DistributedBurnPipeline(Application):
    """The same graph as three Holoscan fragments, to run as separate processes (Holoscan's
    --driver/--worker/--address/--fragments, UCX between them):

        capture (camera or video; e.g. the Jetson) -> analysis (the GPU server) -> display (overlay, records)
    """

    def __init__(self, plan: RunPlan, *args, **kwargs):
        self.plan = plan
        self.composed = {}
        super().__init__(*args, **kwargs)

    def compose(self):
        plan = self.plan
        capture = _StageFragment(self, lambda f: capture_stage(f, plan), name="capture")
        analysis = _StageFragment(self, lambda f: analysis_stage(f, plan), name="analysis")
        display = _StageFragment(self, lambda f: display_stage(f, plan), name="display")
        self.add_flow(capture, analysis, {("source.out", "triage.in")})
        self.add_flow(analysis, display, {("postprocess.out", "overlay.in")})

    @property
    def recorder(self):
        return getattr(self.composed.get("display"), "recorder", None)

    @property
    def source(self):
        return getattr(self.composed.get("capture"), "source", None)

    @property
    def router(self):
        return getattr(self.composed.get("analysis"), "router", None)


def run_pipeline(plan: RunPlan, app: Application | None = None) -> dict:
    """Run the graph to the end of the source; write and return the run summary."""
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    # an explicit argv: Holoscan must not read holoburn's own command line (it would take
    # `--config` as its own option)
    app = app or BurnPipeline(plan, ["holoburn"])
    # A fragment that waits for frames from another process looks idle between them: give it
    # time before calling that a deadlock, or it stops while frames are still on the wire.
    patience_ms = plan.config["scheduler"]["distributed_idle_ms"] if isinstance(app, DistributedBurnPipeline) else 0
    app.scheduler(EventBasedScheduler(app, worker_thread_number=plan.config["scheduler"]["worker_threads"],
                                      stop_on_deadlock=True, stop_on_deadlock_timeout=patience_ms, name="scheduler"))
    started = time.time()
    plan.ledger.started = time.monotonic()  # throughput of the graph, not of model loading or engine builds
    app.run()
    return write_summary(plan, app, started)


def write_summary(plan: RunPlan, app, started: float) -> dict | None:
    """summary.json, written by the process that holds the results writer."""
    recorder = getattr(app, "recorder", None)
    if recorder is None:
        return None
    backend = {"model_id": plan.card.model_id, **plan.backend.describe()} if plan.backend else plan.ledger.backend
    summary = {
        "source": plan.source_id,
        "model_sha256": plan.card.model_sha256() if plan.card else None,
        **backend,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        **plan.ledger.summary(),
        "missing_from_container": app.source.missing if getattr(app, "source", None) else None,
        "overlay_frames": recorder.writer.frames_written,
        "overlay_size": recorder.writer.size,
        "overlay_no_signal_frames": recorder.no_signal_written,
        "lane_changes": app.router.changes if getattr(app, "router", None) else plan.ledger.lane_changes,
        "sources_skipped": list(getattr(plan.reader, "skipped", [])),
        "dicom_exported_frames": plan.exporter.written if plan.exporter else None,
        "dicom_export_failures": plan.exporter.failed if plan.exporter else None,
        "outputs": {"results": "results.jsonl", "overlay": "overlay.mp4", "summary": "summary.json",
                    "masks": str(plan.masks_dir) if plan.masks_dir else None},
    }
    expected = summary["processed"] + recorder.no_signal_written
    if summary["overlay_frames"] != expected:
        raise RuntimeError(f"overlay video has {summary['overlay_frames']} frames for {summary['processed']} processed"
                           f" and {recorder.no_signal_written} NO SIGNAL")
    write_json(plan.out_dir / "summary.json", summary)
    return summary
