"""Run sources through the graph and write the run's outputs: the one way `run`, `demo`,
`validate` and the fragments of a distributed run replay a source.

Opens every source and the model before the graph starts (bad input fails at once), builds the
lanes from the config's `lanes` section, starts the metrics endpoint and the DICOM export when
configured, runs app.graph, and writes summary.json. In a distributed run each process opens
only what its fragments need, and the process holding `display` writes the summary.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from holoburn.app.graph import (
    GraphPlan,
    SourceSpec,
    assess_limits,
    buffer_slack,
    build_runtimes,
    graph_lanes,
    lane_policies,
    lanes_in_use,
    run_graph,
)
from holoburn.app.run.engine_setup import ensure_engine
from holoburn.app.run.sources import gxf_recording, open_reader, parse_source, source_id
from holoburn.clinical.burn_size import region_tbsa_pct
from holoburn.clinical.errors import BadInput, HoloburnError
from holoburn.clinical.triage import Lane, LaneRouter, TriagePolicy
from holoburn.engines.backend import cuda_available, open_backend
from holoburn.engines.card import load_card
from holoburn.engines.precision import PrecisionModelMissing
from holoburn.processing.files import OutputFull, write_json
from holoburn.processing.ledger import Ledger
from holoburn.processing.recorder import OUTPUT_FULL, RunRecorder, SourceOutput
from holoburn.processing.runtime import SourceFacts

log = logging.getLogger("holoburn")

FRAGMENTS = ("capture", "analysis", "display")


def parse_lane_spec(spec: str, default_lane: str) -> tuple[str, Lane]:
    """'video:a.mp4@EMERGENCY' -> ('video:a.mp4', Lane.EMERGENCY)."""
    location, sep, lane = spec.rpartition("@")
    if sep and lane.upper() in Lane.__members__:
        return location, Lane[lane.upper()]
    return spec, Lane.parse(default_lane)


def fragments_here(argv: list[str] | None) -> set[str]:
    """The fragments this process runs: all of them without Holoscan's distributed flags."""
    if not argv:
        return set(FRAGMENTS)
    if "--fragments" in argv:
        named = argv[argv.index("--fragments") + 1]
        return set(FRAGMENTS) if named == "all" else {f.strip() for f in named.split(",")}
    return set(FRAGMENTS) if "--worker" in argv else set()


@dataclass
class Replay:
    """What one replay opened: its plan and the pieces its summary reads."""

    plan: GraphPlan
    card: object
    backend: object
    specs: list
    exporters: list = field(default_factory=list)
    metrics: object = None


def open_sources(config: dict, specs: list[str], *, open_readers: bool, readers: dict | None = None) -> list[SourceSpec]:
    """readers: spec -> a reader already open (tests give a camera stand-in this way)."""
    src = config["source"]
    region = src["body_region"]
    facts = SourceFacts(region_tbsa_pct(region, src["age_years"]) if region else None, region, src["cm2_per_pixel"])
    several = len(specs) > 1 or bool(src.get("numbers"))  # a lane process of a run with several cameras
    numbers = src.get("numbers") or list(range(1, len(specs) + 1))
    if len(numbers) != len(specs):
        raise BadInput(f"source.numbers names {len(numbers)} sources but {len(specs)} are given")
    sources: list[SourceSpec] = []
    for spec, number in zip(specs, numbers):
        location, lane = parse_lane_spec(spec, src["lane"])
        kind, where = parse_source(location)
        if kind == "gxf" and several:
            raise BadInput(f"source {spec}: Holoscan recordings replay one at a time; convert the others to video "
                           "(holoburn convert)")
        if location in [parse_lane_spec(s, src["lane"])[0] for s in specs[: specs.index(spec)]]:
            raise BadInput(f"source {location} is given twice; give each camera or file once")
        sid = source_id(location, int(number))
        reader = (readers or {}).get(spec) or (open_reader(location, config, source_id=sid)
                                                if open_readers and kind != "gxf" else None)
        recording = gxf_recording(where) if kind == "gxf" else None
        # several sources are cameras side by side: recordings play at their own pace, as a camera
        # delivers frames, so a lane that cannot keep up drops its oldest frames, counted
        sources.append(SourceSpec(sid, reader=reader, recording=recording, lane=lane,
                                  realtime=bool(src["realtime"]) or several, loop=bool(src["loop"]),
                                  max_frames=src["max_frames"], facts=facts))
    return sources


def expected_frames(sources: list[SourceSpec], max_frames: int | None) -> int | None:
    """Frames the progress bar expects (None when a source cannot say: cameras, loops)."""
    counts = []
    for source in sources:
        if source.loop:
            return max_frames * len(sources) if max_frames else None
        if source.recording is not None:
            from holoburn.operators.gxf_io import recorded_frames

            count = recorded_frames(*source.recording)
        else:
            count = getattr(source.reader, "frame_count", None)
        if not count and not max_frames:
            return None
        counts.append(min(count or max_frames, max_frames) if max_frames else count)
    return sum(counts) or None


def open_backend_for(card, inference: dict, device: str):
    try:
        return open_backend(card, inference["backend"], inference["precision"], device, threads=inference["threads"])
    except PrecisionModelMissing:
        if not inference["build_missing"]:
            raise
        ensure_engine(card, inference["backend"], inference["precision"], inference)
        return open_backend(card, inference["backend"], inference["precision"], device, threads=inference["threads"])


def run_device(config: dict) -> str:
    """Where a run's lanes run: cuda where a device is there and the backend can use it."""
    return "cuda" if cuda_available() and config["inference"]["backend"] in ("auto", "torch", "tensorrt") else "cpu"


def plan_replay(config: dict, specs: list[str], out_dir: Path, *, observers=(), keep_logits=False, progress=None,
                argv: list[str] | None = None, device: str | None = None, readers: dict | None = None) -> Replay:
    """Open sources, model, lanes and results writer for a run of `specs` (KIND:LOCATION[@LANE])."""
    out_dir = Path(out_dir)
    here = fragments_here(argv)
    audit = Path(config["dicom"]["audit_log"])
    if not audit.is_absolute():  # the audit log of a run lives with its results
        config = {**config, "dicom": {**config["dicom"], "audit_log": str(out_dir / audit)}}
    src, inference, tri = config["source"], config["inference"], config["triage"]
    sources = open_sources(config, specs, open_readers="capture" in here, readers=readers)
    device = device or run_device(config)
    card = load_card(inference["model"] or None)
    policies = lane_policies(config)
    router = LaneRouter(defaults={s.source_id: s.lane for s in sources}, escalate=tri["escalate"],
                        calm_frames=tri["calm_frames"], evidence=tri["escalate_after"], window=tri["escalate_window"])
    single = len(sources) == 1
    lanes = [sources[0].lane] if single else lanes_in_use(sources, router)
    runtimes, priorities, backend = {}, {}, None
    if "analysis" in here:
        sizes = tuple({(s.reader.height, s.reader.width) for s in sources
                       if s.reader is not None and getattr(s.reader, "height", 0)}) or ((1080, 1920),)
        runtimes, priorities = build_runtimes(
            lanes, policies, device=device, card=card, sources=sources, frame_sizes=sizes,
            extra_slots=buffer_slack("chain" if single else "lanes", device), keep_logits=keep_logits,
            limits=assess_limits(config, card), cuda_graph_lanes=graph_lanes(config),
            triage=TriagePolicy(tri["partial_tbsa_threshold_pct"], tri["min_share_of_skin"]),
            alpha=config["overlay"]["alpha"], open_backend_for=lambda lane: open_backend_for(card, inference, device))
        backend = next(iter(runtimes.values())).backend
    if progress is not None and getattr(progress, "total", None) is None:
        progress.total = expected_frames(sources, src["max_frames"])
    replay = Replay(None, card, backend, specs)
    results = Ledger()
    if "display" in here:
        observers = list(observers)
        if config["metrics"]["enabled"]:
            from holoburn.app.run.metrics_endpoint import PipelineMetrics

            replay.metrics = PipelineMetrics()
            replay.metrics.start(config["metrics"]["host"], config["metrics"]["port"])
            if backend is not None:
                replay.metrics.describe(model_id=card.model_id, **backend.describe())
            observers.append(replay.metrics.observer)
        for source in sources:
            reader = source.reader
            if config["dicom"]["export"] and reader is not None and hasattr(reader, "audit"):
                from holoburn.app.run.dicom import DicomExporter

                replay.exporters.append(DicomExporter(out_dir / "dicom", reader, source.source_id))
        observers += replay.exporters
        described = {"model_id": card.model_id, **(backend.describe() if backend else {})}
        results = RunRecorder(out_dir, [SourceOutput(s.source_id, getattr(s.reader, "fps", 0) or config["gxf"]["fps"],
                                                     (s.reader.height, s.reader.width) if getattr(s.reader, "height", 0) else None,
                                                     stills=getattr(s.reader, "stills", False))
                                        for s in sources],
                              fourcc=config["video_sink"]["fourcc"], masks_dir=config["results"]["save_masks"],
                              observers=observers, progress=progress, backend=described,
                              picture_threads=device == "cuda" or not single)
    replay.plan = GraphPlan(sources=sources, runtimes=runtimes, policies=policies, router=router, results=results,
                            config=config, device=device, mode="chain" if single else "lanes", priorities=priorities,
                            fragments=bool(argv))
    return replay


def replay(config: dict, specs: list[str], out_dir: Path, *, observers=(), keep_logits=False, progress=None,
           argv: list[str] | None = None, readers: dict | None = None) -> dict | None:
    """Plan, run and summarise; returns the summary (None in a process without `display`)."""
    if argv:
        # frames cross between fragments as tensor maps, which Holoscan's UCX transmitter serializes
        # into a buffer of 127 KiB by default: make room for a 1080p frame and its mask
        os.environ.setdefault("HOLOSCAN_UCX_SERIALIZATION_BUFFER_SIZE", str(32 << 20))
    # from before the outputs are opened to the summary a stop signal never cuts a file short: it
    # ends the sources, the run closes its files and writes its summary, then reports the stop
    with stop_signals() as stop:
        run = plan_replay(config, specs, out_dir, observers=observers, keep_logits=keep_logits, progress=progress,
                          argv=argv, readers=readers)
        started = time.time()
        recorder = run.plan.results
        for source in run.plan.sources:
            source.stop_requested = stop.requested
        app = None
        try:
            app = run_graph(run.plan, argv)
        finally:
            if isinstance(recorder, RunRecorder):
                recorder.close(emitted_by_source(app), "interrupted" if stop.first() else "not_returned")
            if run.metrics is not None:
                run.metrics.stop()
        if not isinstance(recorder, RunRecorder):
            return None
        stopped_by = stop.first()  # a signal after this moment finds the run finished
        summary = write_summary(run, app, Path(out_dir), started, stopped_by=stopped_by)
    if stopped_by:
        raise Interrupted(stopped_by, Path(out_dir))
    if recorder.full is not None:
        lost = summary["output_full"]
        raise OutputFull(f"the run stopped: no room left to write in {out_dir} ({recorder.full}). "
                         f"results.jsonl, the overlay video and summary.json are whole: {summary['processed']} "
                         f"frames processed with their pictures, {lost['frames_without_pictures']} recorded "
                         f"without them (status {OUTPUT_FULL}), {lost['frames_not_written']} not written. "
                         "Free space (or raise the file-size limit) or give another --out, and run again")
    return summary


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class StopRequest:
    """The stop signals a run received, in order; `requested` is set at the first."""

    requested: threading.Event = field(default_factory=threading.Event)
    signals: list = field(default_factory=list)

    def first(self) -> int | None:
        return self.signals[0] if self.signals else None


@contextmanager
def stop_signals():
    """SIGINT and SIGTERM during a run: noted the moment they arrive, and the sources end (once the
    graph runs, Holoscan's own handler also stops it), so that the run closes its files and writes
    its summary before it reports the stop.

    Python runs a signal handler only when the main thread runs Python, and during a run the main
    thread is inside Holoscan: a signal that came before Holoscan's handler was in place (the
    graph starting) would have been noted only when the run ended, which a looping source or a
    camera never does. So the signal is taken from a wake-up pipe, which the interpreter writes
    at once, by a thread of its own."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # signals are the main thread's
        yield stop
        return
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    previous = {sig: signal.signal(sig, lambda _number, _frame: None) for sig in STOP_SIGNALS}
    previous_fd = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    watcher = threading.Thread(target=_note_stop_signals, args=(wake_read, stop), name="stop-signals", daemon=True)
    watcher.start()
    try:
        yield stop
    finally:
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.write(wake_write, b"\0")  # not a signal number: the watcher's end
        watcher.join()
        os.close(wake_read)
        os.close(wake_write)


def _note_stop_signals(wake_read: int, stop: StopRequest) -> None:
    """The wake-up pipe carries one byte per signal, its number; 0 ends the watch."""
    while True:
        for number in os.read(wake_read, 64):
            if number == 0:
                return
            if number in STOP_SIGNALS:
                stop.signals.append(number)
                stop.requested.set()


class Interrupted(HoloburnError):
    """The run was stopped by a signal; its results, overlay and summary are complete up to there."""

    def __init__(self, number: int, out_dir: Path):
        super().__init__(f"stopped by {signal.Signals(number).name}; results and summary.json in {out_dir} "
                         "hold every frame processed until then")
        self.exit_code = 128 + number  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them


def write_summary(run: Replay, app, out_dir: Path, started: float, stopped_by: int | None = None) -> dict:
    """summary.json: the run's accounting, per source and in total, and where its outputs are."""
    plan, recorder = run.plan, run.plan.results
    feeds = {f.source_id: f for f in app.feeds if hasattr(f, "missing")}
    per_source = {}
    for source in plan.sources:
        sid = source.source_id
        per_source[sid] = {"lane": source.lane.name, **recorder.ledger.source_summary(sid),
                           "overlay": recorder.overlay_names[sid], "overlay_frames": recorder.overlay_frames(sid),
                           "overlay_no_signal_frames": recorder.no_signal_written.get(sid, 0),
                           "missing_from_container": feeds[sid].missing if sid in feeds else None}
    backend = run.backend.describe() if run.backend else recorder.backend_seen
    summary = {
        "source": plan.sources[0].source_id if len(plan.sources) == 1 else None,
        "sources": per_source,
        "model_id": run.card.model_id,
        "model_sha256": run.card.model_sha256(),
        **backend,
        "device": backend.get("device", plan.device),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        **recorder.ledger.summary(),
        "missing_from_container": sum(v["missing_from_container"] or 0 for v in per_source.values()) if feeds else None,
        "overlay_frames": sum(v["overlay_frames"] for v in per_source.values()),
        "overlay_no_signal_frames": sum(v["overlay_no_signal_frames"] for v in per_source.values()),
        "lane_changes": plan.router.changes,
        "lanes": {c.name: c.board.stats() for c in app.chains if c.board is not None} or None,
        "sources_skipped": [s for src in plan.sources for s in getattr(src.reader, "skipped", [])],
        "dicom_exported_frames": sum(e.written for e in run.exporters) if run.exporters else None,
        "dicom_export_failures": [f for e in run.exporters for f in e.failed] if run.exporters else None,
        "write_errors": recorder.write_errors,
        "stopped": "interrupted" if stopped_by else "output_full" if recorder.full else "end_of_sources",
        "output_full": _output_full(recorder, app) if recorder.full else None,
        "stop_signal": signal.Signals(stopped_by).name if stopped_by else None,
        # frames the sources emitted that have no record: 0 unless a stop cut them off in the graph
        "frames_not_written": _not_written(recorder, app),
        "outputs": {"results": "results.jsonl", "summary": "summary.json",
                    "overlays": list(recorder.overlay_names.values()),
                    "masks": str(recorder.masks_dir) if recorder.masks_dir else None},
    }
    expected = summary["processed"] + summary["overlay_no_signal_frames"]
    if summary["overlay_frames"] != expected and not recorder.write_errors:
        raise RuntimeError(f"overlay videos hold {summary['overlay_frames']} frames for {summary['processed']} processed"
                           f" and {summary['overlay_no_signal_frames']} NO SIGNAL")
    audits = {s.source_id: s.reader.audit for s in plan.sources if hasattr(s.reader, "audit")}
    # the audit chain's head, kept apart from the log: emptying or truncating it is then detectable
    # (holoburn audit verify LOG --expect-head COUNT:HASH)
    summary["audit_head"] = {sid: "%d:%s" % audit.head() for sid, audit in audits.items()} or None
    if plan.config["results"]["source_map"]:
        summary["outputs"]["source_map"] = write_source_map(out_dir, plan.sources, run.specs)
    write_json(out_dir / "summary.json", summary)
    failed = {sid: per["dropped"] for sid, per in per_source.items()
              if per["frames_in"] and not per["processed"] and not stopped_by and not recorder.full}
    if failed:  # written and accounted for, but not a success
        raise SourceFailed("; ".join(f"source {sid}: none of its frames could be processed ({', '.join(reasons)})"
                                     for sid, reasons in failed.items()) + f"; see {out_dir / 'results.jsonl'}")
    return summary


def _output_full(recorder: RunRecorder, app) -> dict:
    """What a run stopped by a full disk did not write: frames the sources emitted that have no
    record (held by the writer, or still in the graph when it stopped)."""
    not_written = _not_written(recorder, app)
    return {"error": str(recorder.full), "frames_without_pictures": recorder.ledger.dropped.get(OUTPUT_FULL, 0),
            "frames_not_written": recorder.not_written if not_written is None else not_written}


def emitted_by_source(app) -> dict[str, int] | None:
    """Frames each source of this process emitted (None: the sources run elsewhere or cannot say)."""
    feeds = getattr(app, "feeds", None)
    if not feeds or not all(hasattr(feed, "emitted") for feed in feeds):
        return None
    return {feed.source_id: feed.emitted for feed in feeds}


def _not_written(recorder: RunRecorder, app) -> int | None:
    """Frames the sources emitted that have no record; None where the sources cannot say (they run
    in another process, or a Holoscan recording's replayer counts nothing)."""
    emitted = emitted_by_source(app)
    return None if emitted is None else sum(emitted.values()) - recorder.ledger.frames_in


class SourceFailed(HoloburnError):
    """Every frame of a source failed: the run wrote its records and summary, and still failed."""

    exit_code = 1


SOURCE_MAP = "source_map.IDENTIFIERS.json"


def write_source_map(out_dir: Path, sources: list[SourceSpec], specs: list[str]) -> str:
    """The one file that ties opaque source ids to locations (paths may hold patient names):
    written only on request, readable by its owner only, named so that nobody ships it by mistake.
    A source of several files (image:FOLDER) also maps each frame index to its file (`files`)."""
    locations = {s.source_id: parse_lane_spec(spec, "ROUTINE")[0] for s, spec in zip(sources, specs)}
    files = {s.source_id: s.reader.identifiers() for s in sources if hasattr(s.reader, "identifiers")}
    write_json(out_dir / SOURCE_MAP, {"holds_identifiers": True,
                                      "note": "source locations may name patients: keep this file with the "
                                              "records it identifies, never in exports or reports",
                                      "sources": locations, **({"files": files} if files else {})}, mode=0o600)
    return SOURCE_MAP
