"""The holoburn graph: one Holoscan application for every mode (run, demo, validate, bench and
the distributed fragments). The modes differ in sources, results and config, never in the
operators between them.

    source_0 ─┐            ┌─> <lane chain>: preprocess -> inference -> postprocess -> overlay -> sink -> results
      ...     ├─> triage ──┤                                                                  │
    source_n ─┘     ^      └─> <lane chain>: ...                                              │
                    └──────────────── feedback: triage levels (escalation) and credits ───────┘

- source: one per camera, recording or folder (operators.source.FrameSourceOp over a reader;
  Holoscan recordings through VideoStreamReplayerOp -> TensorToFrameOp). With
  `results.record_gxf` the first source's frames are also recorded (VideoStreamRecorderOp).
- triage: gives each frame its lane (operators.triage) and, with queues, releases batches most
  urgent first. One source is one lane, straight through with back-pressure (nothing dropped).
- a lane chain: each lane in use has its own chain on a GPU (its own CudaStreamPool at the
  lane's priority, its own memory); on the CPU every lane shares one chain, most urgent first.
  Host or device processing is the lane runtime's choice (processing.runtime), not another graph.
  Lanes listed in `gpu.fuse_stages` run their four device stages in one operator (`process`).
- sink -> results: clinical numbers, escalation feedback, then the run's one results writer.

Distributed (Holoscan fragments over UCX): `capture` (sources), `analysis` (triage and lanes),
`display` (results): e.g. capture on a Jetson, analysis on a GPU server.
"""
from __future__ import annotations

import gc
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from holoscan.conditions import PeriodicCondition, PeriodicConditionPolicy
from holoscan.core import Application, Fragment
from holoscan.schedulers import EventBasedScheduler

from holoburn.clinical.assessability import AssessLimits
from holoburn.clinical.errors import BadConfig
from holoburn.clinical.triage import Lane, LaneRouter, TriagePolicy
from holoburn.operators.lane_stages import InferenceOp, OverlayOp, PostprocessOp, PreprocessOp, ProcessOp, SinkOp
from holoburn.operators.results import ResultsOp
from holoburn.operators.source import FrameSourceOp
from holoburn.operators.triage import ChainRoute, TriageOp
from holoburn.processing.lanes import LaneBoard, LanePolicy, stream_priority
from holoburn.processing.runtime import (
    CpuLaneRuntime,
    GpuLaneRuntime,
    SourceFacts,
    device_priority_range,
    priority_range_source,
)

log = logging.getLogger("holoburn.graph")

MODES = ("lanes", "single_lane", "chain")
POLICY_KEYS = ("batch_size", "queue_capacity", "drop", "depth", "stream_priority", "memory", "pool_mb")


# ----------------------------------------------------------------------------- plan


@dataclass
class SourceSpec:
    """One camera, recording or folder feeding the graph.

    reader: a media reader (video file, camera, DICOM, frames in memory); recording: (folder,
    basename) of a Holoscan recording instead. fps: pace the source at this rate (frames in
    memory played as a camera); realtime: pace a reader by its timestamps.
    stop_requested: a threading.Event that ends the source where it is (a stop signal).
    """

    source_id: str
    reader: object = None
    recording: tuple | None = None
    lane: Lane = Lane.ROUTINE
    realtime: bool = False
    loop: bool = False
    max_frames: int | None = None
    fps: float | None = None
    facts: SourceFacts = field(default_factory=SourceFacts)
    stop_requested: object = None


@dataclass
class Chain:
    """A chain of lane operators and the lanes it serves."""

    name: str
    lanes: list
    runtimes: dict  # queue lane -> runtime
    board: LaneBoard | None
    priority: int | None
    lane_map: dict = field(default_factory=dict)
    depth: int = 2


@dataclass
class GraphPlan:
    """Everything the graph needs, built and checked before the first frame.

    results: the run's results writer (processing.recorder.RunRecorder) or, for a benchmark, a
    bare processing.ledger.Ledger. config: the holoburn config (scheduler, gpu, gxf, results).
    mode: `lanes` (queues, priorities), `single_lane` (the comparison without lanes: every frame
    in one ROUTINE queue at the lowest priority) or `chain` (one source straight through).
    """

    sources: list[SourceSpec]
    runtimes: dict
    policies: dict
    router: LaneRouter
    results: object
    config: dict
    device: str = "cpu"
    mode: str = "chain"
    priorities: dict = field(default_factory=dict)
    holoviz: bool = False
    track_log: Path | None = None  # Holoscan data-flow tracking log here
    skip_tracked: int = 30
    max_duration_s: float | None = None
    per_lane_chains: bool | None = None  # None: one chain per lane on a GPU, one shared chain on the CPU
    fragments: bool = False
    capture_only: bool = False  # only the sources and the recording tap (`holoburn convert`)

    def __post_init__(self):
        if self.mode not in MODES:
            raise BadConfig(f"lanes mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode == "chain" and len(self.sources) != 1:
            raise BadConfig(f"one source goes straight through its lane; got {len(self.sources)} sources")
        if self.fragments and self.mode != "chain":
            raise BadConfig("a distributed run takes one source")


def lane_policies(config: dict) -> dict[Lane, LanePolicy]:
    """LanePolicy per lane from the config's `lanes` section; errors name the lane and the key."""
    policies = {}
    for name, settings in (config.get("lanes") or {}).items():
        lane = Lane.parse(name)
        unknown = [k for k in (settings or {}) if k not in POLICY_KEYS]
        if unknown:
            raise BadConfig(f"lanes.{name}: unknown key(s) {', '.join(unknown)} (known: {', '.join(POLICY_KEYS)})")
        policies[lane] = LanePolicy(lane, **(settings or {}))
    for lane in Lane:
        policies.setdefault(lane, LanePolicy(lane))
    return policies


def lanes_in_use(sources: list[SourceSpec], router: LaneRouter) -> list[Lane]:
    used = {s.lane for s in sources}
    if router.escalate and len(sources) > 1:
        used.add(Lane.EMERGENCY)
    return sorted(used)


def build_runtimes(lanes: list[Lane], policies: dict[Lane, LanePolicy], *, device: str, card, open_backend_for,
                   triage: TriagePolicy = TriagePolicy(), sources: list[SourceSpec] = (),
                   frame_sizes=((1080, 1920),), alpha: float = 0.45, extra_slots: int | dict = 0,
                   render: bool = True, keep_logits: bool = False, limits: AssessLimits = AssessLimits(),
                   cuda_graph_lanes: set[Lane] | frozenset = frozenset()) -> tuple[dict, dict]:
    """One runtime per lane. GPU: stream priority from the device's own range, the lane's memory
    and every buffer made now, the backend's CUDA graph captured now, then each lane warmed up
    (GpuLaneRuntime.warm_up; lanes in `cuda_graph_lanes` capture their per-frame graphs there).
    open_backend_for(lane) returns a backend of that lane's own (a CUDA graph's buffers serve one
    lane). extra_slots: buffer sets beyond the lane's depth (buffer_slack), for every lane or per lane."""
    facts = {s.source_id: s.facts for s in sources}
    runtimes, priorities = {}, {}
    if device.startswith("cuda"):
        least, greatest = device_priority_range()
        log.info("stream priority range %d (least) .. %d (greatest), from %s", least, greatest, priority_range_source())
    for lane in lanes:
        policy = policies[lane]
        common = dict(card=card, backend=open_backend_for(lane), triage_policy=triage, sources=facts,
                      alpha=alpha, keep_logits=keep_logits, limits=limits,
                      slots=policy.depth + (extra_slots.get(lane, 0) if isinstance(extra_slots, dict) else extra_slots))
        if device.startswith("cuda"):
            priorities[lane] = stream_priority(policy.stream_priority, least, greatest)
            runtimes[lane] = GpuLaneRuntime(policy, frame_sizes=frame_sizes, stream_priority=priorities[lane], **common)
            runtimes[lane].warm_up(chain_graph=lane in cuda_graph_lanes)
        else:
            runtimes[lane] = CpuLaneRuntime(policy, render=render, **common)
    return runtimes, priorities


def graph_lanes(config: dict) -> set[Lane]:
    """The lanes whose per-frame device work is one CUDA graph (gpu.cuda_graph_lanes)."""
    return {Lane.parse(l) for l in ((config.get("gpu") or {}).get("cuda_graph_lanes") or [])}


def assess_limits(config: dict, card) -> AssessLimits:
    """When a frame is assessable: the config's `assess` section, the out-of-domain threshold
    from the model card unless the config names one."""
    settings = dict(config.get("assess") or {})
    if settings.get("min_skin_confidence") is None:
        settings["min_skin_confidence"] = card.min_skin_confidence
    return AssessLimits(**settings)


def buffer_slack(mode: str, device: str) -> int:
    """Buffer sets a lane needs beyond its depth. Straight through (`chain`), Holoscan's queues
    between the lane's operators hold batches too, each with its buffer set (in the lab a 1080p
    chain with only the lane's depth failed 48 of 90 frames for want of one); on a GPU a batch
    keeps its set until the results writer has its outputs."""
    return 10 if mode == "chain" else (2 if device.startswith("cuda") else 0)


def plan_chains(plan: GraphPlan) -> tuple[list[Chain], dict]:
    """The chains of the graph and the route (lane -> chain name) triage uses."""
    used = [plan.sources[0].lane] if plan.mode == "chain" else lanes_in_use(plan.sources, plan.router)
    gpu = plan.device.startswith("cuda")
    per_lane = gpu if plan.per_lane_chains is None else plan.per_lane_chains
    if plan.mode == "chain":
        lane = used[0]
        chain = Chain(lane.name.lower(), [lane], {lane: plan.runtimes.get(lane)}, None, plan.priorities.get(lane),
                      depth=plan.policies[lane].depth)
        return [chain], {l: chain.name for l in Lane}
    if plan.mode == "single_lane":
        lane = Lane.ROUTINE
        chain = Chain("single", [lane], {lane: plan.runtimes.get(lane)},
                      LaneBoard([plan.policies[lane]], depth=None if gpu else 1),
                      plan.priorities.get(lane), lane_map={l: lane for l in Lane}, depth=plan.policies[lane].depth)
        return [chain], {l: "single" for l in used}
    if not per_lane:
        # one CPU: one chain, most urgent lane first, one batch in flight (pipelining batches on the
        # same cores only makes an urgent frame wait behind more routine work)
        chain = Chain("cpu", used, {l: plan.runtimes.get(l) for l in used},
                      LaneBoard([plan.policies[l] for l in used], depth=1), None,
                      depth=max(plan.policies[l].depth for l in used))
        return [chain], {l: "cpu" for l in used}
    chains = [Chain(l.name.lower(), [l], {l: plan.runtimes.get(l)}, LaneBoard([plan.policies[l]]), plan.priorities.get(l),
                    depth=plan.policies[l].depth) for l in used]
    return chains, {l: l.name.lower() for l in used}


# ----------------------------------------------------------------------------- composition


class BurnApp(Application):
    """The one holoburn application; `plan.fragments` splits it into capture, analysis, display."""

    def __init__(self, plan: GraphPlan, argv: list[str] | None = None):
        self.plan = plan
        self.chains, self.routes = ([], {}) if plan.capture_only else plan_chains(plan)
        self.parts: dict[str, object] = {}  # capture / analysis / display: the composed operators
        # an explicit argv: Holoscan must not read holoburn's own command line
        super().__init__(argv or ["holoburn"])

    def compose(self):
        if self.plan.capture_only:
            compose_capture(self, self)
            return
        if not self.plan.fragments:
            sources = compose_capture(self, self)
            triage, chains = compose_analysis(self, self)
            results = compose_display(self, self)
            for i, source in enumerate(sources):
                self.add_flow(source, triage, {("out", f"in{i}")})
            for name, (first, sink) in chains.items():
                self.add_flow(sink, results[name], {("out", "in")})
            return
        capture = PartFragment(self, compose_capture, name="capture")
        analysis = PartFragment(self, compose_analysis, name="analysis")
        display = PartFragment(self, compose_display, name="display")
        self.add_flow(capture, analysis, {(f"source{i}.out", f"triage.in{i}") for i in range(len(self.plan.sources))})
        self.add_flow(analysis, display, {(f"{c.name}_sink.out", f"{c.name}_results.in") for c in self.chains})

    # what the summary reads after a run
    @property
    def feeds(self) -> list:
        return self.parts.get("capture", [])


class PartFragment(Fragment):
    def __init__(self, app: BurnApp, part, *args, **kwargs):
        self.app, self.part = app, part
        super().__init__(app, *args, **kwargs)

    def compose(self):
        self.part(self.app, self)


def compose_capture(app: BurnApp, fragment) -> list:
    """source(s): the last operator of each source, whose `out` emits Frames."""
    plan = app.plan
    outs = []
    for i, source in enumerate(plan.sources):
        if source.recording is not None:
            from holoscan.operators import VideoStreamReplayerOp

            from holoburn.operators.gxf_io import TensorToFrameOp

            directory, basename = source.recording
            replayer = VideoStreamReplayerOp(fragment, directory=str(directory), basename=basename, frame_rate=0.0,
                                             realtime=bool(source.realtime), repeat=bool(source.loop),
                                             count=int(source.max_frames or 0), name=f"replayer{i}")
            out = TensorToFrameOp(fragment, source_id=source.source_id, fps=plan.config["gxf"]["fps"],
                                  as_tensors=plan.fragments, name=f"source{i}")
            fragment.add_flow(replayer, out)
        else:
            pace = [PeriodicCondition(fragment, int(1e9 / source.fps), policy=PeriodicConditionPolicy.NO_CATCH_UP_MISSED_TICKS,
                                      name=f"source{i}_period")] if source.fps else []
            out = FrameSourceOp(fragment, *pace, reader=source.reader, source_id=source.source_id,
                                realtime=source.realtime, loop=source.loop, max_frames=source.max_frames,
                                stop_requested=source.stop_requested, as_tensors=plan.fragments,
                                name=f"source{i}")
        outs.append(out)
    record = (plan.config.get("results") or {}).get("record_gxf")
    if record:
        from holoscan.operators import VideoStreamRecorderOp

        from holoburn.operators.gxf_io import FrameToTensorOp

        target = Path(record)
        target.parent.mkdir(parents=True, exist_ok=True)
        to_tensor = FrameToTensorOp(fragment, name="record_tensor")
        fragment.add_flow(outs[0], to_tensor)
        fragment.add_flow(to_tensor, VideoStreamRecorderOp(fragment, directory=str(target.parent),
                                                           basename=target.name, name="gxf_recorder"))
    if len(outs) == 1 and not record:
        fragment.add_operator(outs[0])
    app.parts["capture"] = outs
    return outs


def compose_analysis(app: BurnApp, fragment):
    """triage and the lane chains; returns (triage, {chain: (first stage, sink)})."""
    plan = app.plan
    gpu = plan.device.startswith("cuda")
    pools = stream_pools(app, fragment) if gpu else {}
    fused = {Lane.parse(l) for l in ((plan.config.get("gpu") or {}).get("fuse_stages") or [])}
    graphed = graph_lanes(plan.config)
    for chain in app.chains:  # one frame's device work as one CUDA graph (processing.runtime)
        for lane, runtime in chain.runtimes.items():
            if hasattr(runtime, "chain_graph"):
                runtime.chain_graph = lane in graphed
    # the results writer releases a GPU batch's buffer set once its outputs are written; across
    # processes the sink copies them to the host and releases it at once
    results_release = gpu and not plan.fragments
    chains = {}
    for chain in app.chains:
        # gated, a chain holds at most `depth` batches; straight through, one waits at each operator
        common = dict(runtimes=chain.runtimes, depth=chain.depth if chain.board is not None else 0)
        streams = [pools[chain.name]] if gpu else []
        if set(chain.lanes) <= fused:
            stages = [ProcessOp(fragment, *streams, name=f"{chain.name}_process", **common)]
        else:
            stages = [PreprocessOp(fragment, *streams, name=f"{chain.name}_preprocess", **common),
                      InferenceOp(fragment, name=f"{chain.name}_inference", **common),
                      PostprocessOp(fragment, name=f"{chain.name}_postprocess", **common),
                      OverlayOp(fragment, name=f"{chain.name}_overlay", **common)]
        view = plan.holoviz and Lane.EMERGENCY in chain.lanes
        sink = SinkOp(fragment, release=not results_release, hand_off=plan.fragments, view=view,
                      escalation=plan.router.escalate,
                      name=f"{chain.name}_sink", **common)
        for upstream, downstream in zip(stages, stages[1:] + [sink]):
            fragment.add_flow(upstream, downstream)
        if view:
            holoviz(app, fragment, sink, pools.get(chain.name))
        chains[chain.name] = (stages[0], sink)
    triage = TriageOp(fragment, router=plan.router, routes=app.routes, inputs=len(plan.sources),
                      dropped=plan.results.add, name="triage",
                      chains={c.name: ChainRoute(c.board, c.lane_map, c.depth, tuple(c.lanes)) for c in app.chains})
    for name, (first, sink) in chains.items():
        fragment.add_flow(triage, first, {(f"to_{name}", "in")})
        fragment.add_flow(sink, triage, {("feedback", f"feedback_{name}")})
    app.parts["analysis"] = (triage, chains)
    return triage, chains


def compose_display(app: BurnApp, fragment) -> dict:
    """results: one operator per chain, all writing through the run's one results writer."""
    plan = app.plan
    release = plan.device.startswith("cuda") and not plan.fragments
    results = {c.name: ResultsOp(fragment, recorder=plan.results, runtimes=c.runtimes if release else None,
                                 remote=plan.fragments, name=f"{c.name}_results") for c in app.chains}
    for op in results.values():
        fragment.add_operator(op)
    app.parts["display"] = results
    return results


def stream_pools(app: BurnApp, fragment) -> dict:
    """Each chain's CUDA streams, at its lane's priority (and, optionally, the emergency chain on
    SMs of its own: `gpu.emergency_green_context_sms`)."""
    from holoscan.resources import CudaStreamPool

    gpu = app.plan.config.get("gpu") or {}
    flags = int(gpu.get("stream_flags", 1))
    green = green_contexts(app, fragment, gpu.get("emergency_green_context_sms"))
    pools = {}
    for chain in app.chains:
        extra = {"cuda_green_context": green[chain.name]} if chain.name in green else {}
        pools[chain.name] = CudaStreamPool(fragment, dev_id=0, stream_flags=flags, stream_priority=chain.priority or 0,
                                           reserved_size=1, max_size=2, name=f"{chain.name}_streams", **extra)
    return pools


def green_contexts(app: BurnApp, fragment, sms) -> dict:
    if not sms or len(app.chains) < 2 or not any(Lane.EMERGENCY in c.lanes for c in app.chains):
        return {}
    import cupy

    from holoscan.resources import CudaGreenContext, CudaGreenContextPool

    total = cupy.cuda.Device(0).attributes["MultiProcessorCount"]
    if not 0 < int(sms) < total:
        raise BadConfig(f"gpu.emergency_green_context_sms must be between 1 and {total - 1}, got {sms}")
    pool = CudaGreenContextPool(fragment, dev_id=0, num_partitions=2, sms_per_partition=[int(sms), total - int(sms)],
                                name="green_contexts")
    return {c.name: CudaGreenContext(fragment, cuda_green_context_pool=pool, index=0 if Lane.EMERGENCY in c.lanes else 1,
                                     name=f"{c.name}_green") for c in app.chains}


def holoviz(app: BurnApp, fragment, sink, pool) -> None:
    """Holoviz (headless) fed by the emergency lane's sink; its render buffers are counted."""
    from holoscan.operators import HolovizOp
    from holoscan.resources import BlockMemoryPool, MemoryStorageType

    from holoburn.operators.holoviz import RenderCountOp

    height, width = app.plan.config.get("holoviz_size") or (1080, 1920)
    render_pool = BlockMemoryPool(fragment, storage_type=MemoryStorageType.DEVICE, block_size=width * height * 4,
                                  num_blocks=3, name="render_buffers")  # RGBA8 render buffer, frame sized
    extra = {"cuda_stream_pool": pool} if pool is not None else {}
    viz = HolovizOp(fragment, name="holoviz", headless=True, width=width, height=height,
                    tensors=[dict(name="overlay", type="color")], enable_render_buffer_output=True,
                    allocator=render_pool, **extra)
    counter = RenderCountOp(fragment, name="render_count")
    fragment.add_flow(sink, viz, {("view", "receivers"), ("view_specs", "input_specs")})
    fragment.add_flow(viz, counter, {("render_buffer_output", "in")})
    app.holoviz_sink, app.render_counter = sink, counter


# ----------------------------------------------------------------------------- running


class GcPauses:
    """gc.callbacks entry: how often Python's collector ran, per generation, and how long."""

    def __init__(self):
        self._started = None
        self.pauses: dict[int, list[float]] = {}

    def __call__(self, phase, info):
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.pauses.setdefault(info.get("generation", -1), []).append((time.perf_counter() - self._started) * 1e3)
            self._started = None

    def report(self) -> dict:
        return {f"gen{g}": {"collections": len(v), "max_ms": round(max(v), 3), "total_ms": round(sum(v), 3)}
                for g, v in sorted(self.pauses.items())}


def run_graph(plan: GraphPlan, argv: list[str] | None = None) -> BurnApp:
    """Run the graph until its sources end (or `max_duration_s`); returns the application, whose
    parts, chains and tracker the caller reads for its summary. Settings from the config's
    `scheduler` section: worker threads, Python's GIL switch interval, garbage collection."""
    sched = plan.config.get("scheduler") or {}
    app = BurnApp(plan, argv)
    max_ms = int(plan.max_duration_s * 1000) if plan.max_duration_s else -1
    # a fragment waiting for frames from another process looks idle between them: give it time
    # before calling that a deadlock, or it stops while frames are still on the wire
    patience_ms = int(sched.get("distributed_idle_ms", 5000)) if plan.fragments else 200
    app.scheduler(EventBasedScheduler(app, worker_thread_number=int(sched.get("worker_threads", 2)),
                                      stop_on_deadlock=True, stop_on_deadlock_timeout=patience_ms,
                                      max_duration_ms=max_ms, name="scheduler"))
    app.tracker = None
    if plan.track_log is not None:
        app.tracker = app.track(num_start_messages_to_skip=plan.skip_tracked, num_last_messages_to_discard=5,
                                latency_threshold=0)
        app.tracker.enable_logging(str(plan.track_log), 100)
    interval = sched.get("gil_switch_interval_ms")
    previous = sys.getswitchinterval()
    if interval:
        sys.setswitchinterval(float(interval) / 1000.0)
    app.gc_pauses = GcPauses()
    if sched.get("gc", "freeze") == "freeze":
        # everything alive now (the model, the buffers, imported modules) is left out of Python's
        # collections while frames flow: a full collection over it pauses every operator
        gc.collect()
        gc.freeze()
    gc.callbacks.append(app.gc_pauses)
    app.started = time.monotonic()
    try:
        app.run()
    finally:
        gc.callbacks.remove(app.gc_pauses)
        gc.unfreeze()
        sys.setswitchinterval(previous)
        for runtime in plan.runtimes.values():
            runtime.unbind()  # the application's streams end with it
        if app.tracker is not None:
            app.tracker.end_logging()
    app.wall_s = time.monotonic() - app.started
    return app


def lanes_summary(app: BurnApp) -> dict:
    """What a lanes run did, from its application and its ledger: frames emitted and accounted
    (lost_in_transport must be 0), each chain's queues and serving order, per-lane accounting."""
    plan, ledger = app.plan, app.plan.results.ledger if hasattr(app.plan.results, "ledger") else app.plan.results
    summary = {"mode": plan.mode, "device": plan.device, "wall_s": round(app.wall_s, 3),
               "python_gc": app.gc_pauses.report(),
               "sources": {s.source_id: {"lane": s.lane.name, "fps": s.fps, "emitted": f.emitted}
                           for s, f in zip(plan.sources, app.feeds)},
               "chains": {c.name: {"queue_lanes": [l.name for l in c.lanes], "stream_priority": c.priority,
                                   "queues": c.board.stats() if c.board else None,
                                   "served_order": c.board.order[:200] if c.board else None} for c in app.chains},
               "by_frame_lane": ledger.lane_summary(),
               "lane_changes": list(plan.router.changes)}
    summary["frames_emitted"] = sum(f.emitted for f in app.feeds)
    summary["frames_accounted"] = ledger.frames_in
    summary["lost_in_transport"] = summary["frames_emitted"] - ledger.frames_in
    if getattr(app, "render_counter", None) is not None:
        # a batch Holoviz had no room for (while it starts, or slower than the camera) is not shown: counted
        summary["holoviz"] = {"frames_fed": app.holoviz_sink.frames_shown, "render_buffers": app.render_counter.rendered,
                              "not_rendered": app.holoviz_sink.frames_shown - app.render_counter.rendered}
    if app.tracker is not None:
        summary["tracker"] = {"paths": list(app.tracker.get_path_strings()), "log": str(plan.track_log)}
    return summary


def parse_flow_log(path: Path) -> dict[str, list[float]]:
    """Holoscan's data-flow tracking log -> {path "a,b,c": [end-to-end ms per message]}.

    Each message's line is `(op, receive_us, publish_us) -> ...`; its end-to-end latency is the
    last publish minus the first receive, as the tracker itself computes it."""
    paths: dict[str, list[float]] = {}
    pattern = re.compile(r"\(([^,()]+),(\d+),(\d+)\)")
    for line in Path(path).read_text().splitlines():
        hops = pattern.findall(line)
        if len(hops) < 2:
            continue
        name = ",".join(h[0] for h in hops)
        paths.setdefault(name, []).append((int(hops[-1][2]) - int(hops[0][1])) / 1e3)
    return paths
