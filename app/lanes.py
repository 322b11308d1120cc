"""The multi-source, multi-lane graph: several cameras, one GPU (or the CPU), priority lanes.

    source_0 ─┐             ┌─> EMERGENCY: process (prepare+infer+postprocess+overlay) -> sink -> results
    source_1 ─┼─> triage ───┤                                                       |     (-> Holoviz)
      ...     │  (lanes,    └─> ROUTINE:   prepare -> infer -> postprocess -> overlay -> sink -> results
    source_n ─┘   queues)  <──────────────── credit: one per batch done ──────────────────+

The triage operator (LaneGateOp) gives each frame its lane, queues it on the chain serving that
lane and releases batches, most urgent first, while the chain has room. Lanes listed in
configs/lanes.yaml `gpu.fuse_stages` run their four GPU stages in one operator (`process`):
each operator hop is a wait for Python's GIL while routine lanes keep it busy.

Modes (`LanesPlan.mode`):
- `lanes`: on a GPU each lane in use has its own chain: its own `CudaStreamPool` (priority placed
  in the range the device reports), its own memory (EMERGENCY: a dedicated pool, all buffers made
  at start-up), its own batches. On the CPU the same lanes share one chain whose gate serves the
  most urgent lane first (the CPU does one thing at a time, so priority orders the queue).
- `single_lane`: the comparison without lanes: every frame, emergency ones too, queues in one
  ROUTINE lane at the lowest (default) stream priority.
- `chain`: one source straight through its lane's chain, no queues (source -> triage -> stages):
  Holoscan's data-flow tracking then sees the whole source-to-overlay path (a credit loop would
  hide the source from it).

Lane settings come from configs/lanes.yaml (`load_lanes_config`), escalation from holoburn.yaml's
`triage` section (LaneRouter): a source is raised to EMERGENCY while its last result shows a
referral-grade burn and falls back after `calm_frames`; every change is logged and kept in the
run summary.
"""
from __future__ import annotations

import gc
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from holoscan.conditions import CountCondition, PeriodicCondition, PeriodicConditionPolicy
from holoscan.core import Application
from holoscan.schedulers import EventBasedScheduler

from holoburn.processing.lanes import LaneBoard, LaneConfigError, LanePolicy, stream_priority
from holoburn.clinical.triage import Lane, LaneRouter, TriagePolicy
from holoburn.operators.frame_source import FrameSourceOp
from holoburn.processing.runtime import (
    CpuLaneRuntime,
    GpuLaneRuntime,
    LaneLedger,
    SourceFacts,
    device_priority_range,
    priority_range_source,
)
from holoburn.operators.lanes import (
    FrameFeedOp,
    GateLane,
    HolovizFeedOp,
    LaneGateOp,
    LaneInferOp,
    LaneOverlayOp,
    LanePostprocessOp,
    LanePrepareOp,
    LaneProcessOp,
    LaneResultsOp,
    LaneSinkOp,
    LaneTriageOp,
    RenderCountOp,
)
from holoburn.app.config import ConfigError, merge, read_yaml

log = logging.getLogger("holoburn.lanes")

LANES_FILE = "lanes.yaml"
MODES = ("lanes", "single_lane", "chain")
POLICY_KEYS = ("batch_size", "queue_capacity", "drop", "depth", "stream_priority", "memory", "pool_mb")


# ----------------------------------------------------------------------------- configuration


def load_lanes_config(path: str | Path | None = None) -> dict:
    """configs/lanes.yaml, with a user's file merged over it; unknown keys are errors naming the file."""
    bundled = resources.files("holoburn.configs").joinpath(LANES_FILE)
    import yaml

    config = yaml.safe_load(bundled.read_text()) or {}
    if path:
        user = read_yaml(path)
        unknown = []
        for section, value in user.items():
            if section not in config:
                unknown.append(f"{section}: unknown section (known: {', '.join(config)})")
            elif isinstance(value, dict) and section != "lanes":
                unknown += [f"{section}.{k}: unknown key" for k in value if k not in config[section]]
            elif section == "lanes":
                for lane, settings in (value or {}).items():
                    if lane.upper() not in Lane.__members__:
                        unknown.append(f"lanes.{lane}: unknown lane (known: {', '.join(Lane.__members__)})")
                    else:
                        unknown += [f"lanes.{lane}.{k}: unknown key (known: {', '.join(POLICY_KEYS)})"
                                    for k in (settings or {}) if k not in POLICY_KEYS]
        if unknown:
            raise ConfigError(f"lanes config {path}:\n  " + "\n  ".join(unknown))
        config = merge(config, user)
    config["_source"] = str(path or f"holoburn/configs/{LANES_FILE}")
    return config


def lane_policies(config: dict) -> dict[Lane, LanePolicy]:
    """LanePolicy per lane from the config's `lanes` section; errors name the file and the key."""
    where = config.get("_source", LANES_FILE)
    policies = {}
    for name, settings in (config.get("lanes") or {}).items():
        try:
            lane = Lane.parse(name)
            policies[lane] = LanePolicy(lane, **{k: v for k, v in (settings or {}).items() if k in POLICY_KEYS})
        except (LaneConfigError, ValueError, TypeError) as exc:
            raise ConfigError(f"lanes config {where}: lanes.{name}: {exc}") from None
    for lane in Lane:
        policies.setdefault(lane, LanePolicy(lane))
    return policies


# ----------------------------------------------------------------------------- plan


@dataclass
class SourceSpec:
    """One camera (or recording) feeding the lanes.

    images: frames it cycles through, (H, W, 3) uint8 RGB (pinned host memory where a capture
    card would deliver them so). fps: its pace (None: as fast as the graph takes frames).
    count: frames to emit (None: until the application stops).
    """

    source_id: str
    images: list
    lane: Lane = Lane.ROUTINE
    fps: float | None = 30.0
    count: int | None = None
    facts: SourceFacts = field(default_factory=SourceFacts)
    reader: object = None  # a real source (media.video / media.camera reader) instead of `images`
    realtime: bool = False  # with a reader: pace frames by their timestamps


def build_router(sources: list[SourceSpec], triage_config: dict) -> LaneRouter:
    return LaneRouter(defaults={s.source_id: s.lane for s in sources}, escalate=triage_config.get("escalate", True),
                      calm_frames=triage_config.get("calm_frames", 30))


def lanes_in_use(sources: list[SourceSpec], router: LaneRouter) -> list[Lane]:
    used = {s.lane for s in sources}
    if router.escalate:
        used.add(Lane.EMERGENCY)
    return sorted(used)


def build_runtimes(lanes: list[Lane], policies: dict[Lane, LanePolicy], *, device: str, card, open_backend_for,
                   router: LaneRouter, triage: TriagePolicy = TriagePolicy(), sources: list[SourceSpec] = (),
                   frame_sizes=((1080, 1920),), alpha: float = 0.45, extra_slots: dict | None = None,
                   render: bool = True):
    """One runtime per lane. GPU: stream priority from the device's own range, the lane's memory
    and every buffer made now, the backend's CUDA graph captured now. open_backend_for(lane) must
    return a backend of that lane's own (a CUDA graph's buffers serve one lane). extra_slots: lane ->
    buffer sets beyond the lane's depth (an ungated `chain` run may hold more batches in flight)."""
    facts = {s.source_id: s.facts for s in sources}
    runtimes, priorities = {}, {}
    if device.startswith("cuda"):
        least, greatest = device_priority_range()
        log.info("stream priority range %d (least) .. %d (greatest), from %s", least, greatest, priority_range_source())
    for lane in lanes:
        policy = policies[lane]
        common = dict(card=card, backend=open_backend_for(lane), router=router, triage_policy=triage, sources=facts,
                      alpha=alpha, slots=policy.depth + (extra_slots or {}).get(lane, 0))
        if device.startswith("cuda"):
            priorities[lane] = stream_priority(policy.stream_priority, least, greatest)
            runtimes[lane] = GpuLaneRuntime(policy, frame_sizes=frame_sizes, stream_priority=priorities[lane], **common)
        else:
            runtimes[lane] = CpuLaneRuntime(policy, render=render, **common)
    return runtimes, priorities


@dataclass
class LanesPlan:
    """Everything the lane graph needs, built and checked before the first frame."""

    sources: list[SourceSpec]
    policies: dict[Lane, LanePolicy]
    runtimes: dict[Lane, object]
    router: LaneRouter
    device: str = "cpu"
    mode: str = "lanes"
    config: dict = field(default_factory=dict)  # the lanes config (scheduler, gpu sections)
    priorities: dict = field(default_factory=dict)  # lane -> CUDA stream priority
    holoviz: bool = False
    track_log: Path | None = None  # `chain` mode: Holoscan data-flow tracking log here
    skip_tracked: int = 30  # tracked messages to leave out at the start (warm-up)
    max_duration_s: float | None = None
    per_lane_chains: bool | None = None  # None: one chain per lane on a GPU, one shared chain on the CPU
    on_frame: object = None  # callable(frame, done_ns) for every frame that leaves the graph

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"lanes mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode == "chain" and len(self.sources) != 1:
            raise ValueError(f"chain mode takes exactly one source, got {len(self.sources)}")


@dataclass
class Chain:
    name: str
    lanes: list  # queue lanes its gate holds
    runtimes: dict  # queue lane -> runtime
    board: LaneBoard | None
    priority: int | None
    lane_map: dict = field(default_factory=dict)
    ledger: LaneLedger = field(default_factory=LaneLedger)
    depth: int = 2


def plan_chains(plan: LanesPlan) -> tuple[list[Chain], dict]:
    """The chains of the graph and the route (lane -> chain name) every triage uses."""
    used = lanes_in_use(plan.sources, plan.router)
    gpu = plan.device.startswith("cuda")
    per_lane = gpu if plan.per_lane_chains is None else plan.per_lane_chains
    if plan.mode == "single_lane":
        lane = Lane.ROUTINE
        chain = Chain("single", [lane], {lane: plan.runtimes[lane]},
                      LaneBoard([plan.policies[lane]], depth=None if gpu else 1),
                      plan.priorities.get(lane), lane_map={l: lane for l in Lane})
        return [chain], {l: "single" for l in used}
    if plan.mode == "chain":
        lane = plan.sources[0].lane
        chain = Chain(lane.name.lower(), [lane], {lane: plan.runtimes[lane]}, None, plan.priorities.get(lane))
        return [chain], {l: chain.name for l in used}
    if not per_lane:
        # one CPU: one chain, most urgent lane first, one batch in flight (pipelining batches on the
        # same cores only makes an urgent frame wait behind more routine work)
        chain = Chain("cpu", used, {l: plan.runtimes[l] for l in used},
                      LaneBoard([plan.policies[l] for l in used], depth=1), None)
        return [chain], {l: "cpu" for l in used}
    chains = [Chain(l.name.lower(), [l], {l: plan.runtimes[l]}, LaneBoard([plan.policies[l]]), plan.priorities.get(l))
              for l in used]
    return chains, {l: l.name.lower() for l in used}


# ----------------------------------------------------------------------------- graph


class LanesApp(Application):
    def __init__(self, plan: LanesPlan, *args, **kwargs):
        self.plan = plan
        super().__init__(*args, **kwargs)

    def compose(self):
        plan = self.plan
        gpu = plan.device.startswith("cuda")
        chains, routes = plan_chains(plan)
        self.chains = chains
        for chain in chains:
            chain.ledger.on_frame = plan.on_frame
        gated = plan.mode != "chain"
        green = self._green_contexts(chains) if gpu else {}

        # resources first: each chain's CUDA streams, at its lane's priority
        pools = {}
        if gpu:
            from holoscan.resources import CudaStreamPool

            flags = int((plan.config.get("gpu") or {}).get("stream_flags", 1))
            for chain in chains:
                extra = {"cuda_green_context": green[chain.name]} if chain.name in green else {}
                pools[chain.name] = CudaStreamPool(self, dev_id=0, stream_flags=flags, stream_priority=chain.priority or 0,
                                                   reserved_size=1, max_size=2, name=f"{chain.name}_streams", **extra)

        # each chain: [prepare -> infer -> postprocess -> overlay | process] -> sink -> results
        fused = {Lane.parse(l) for l in ((plan.config.get("gpu") or {}).get("fuse_stages") or [])}
        firsts = {}
        self.sinks, self.results = {}, {}
        for chain in chains:
            depth = max(plan.policies[l].depth for l in chain.lanes)
            chain.depth = depth
            common = dict(runtimes=chain.runtimes, depth=depth)
            stream_pool = [pools[chain.name]] if gpu else []
            if set(chain.lanes) <= fused:  # one operator for the GPU stages (fewer hops)
                stages = [LaneProcessOp(self, *stream_pool, name=f"{chain.name}_process", **common)]
            else:
                stages = [LanePrepareOp(self, *stream_pool, name=f"{chain.name}_prepare", **common),
                          LaneInferOp(self, name=f"{chain.name}_infer", **common),
                          LanePostprocessOp(self, name=f"{chain.name}_postprocess", **common),
                          LaneOverlayOp(self, name=f"{chain.name}_overlay", **common)]
            view = plan.holoviz and Lane.EMERGENCY in chain.lanes
            sink = LaneSinkOp(self, credit=gated, view=view, name=f"{chain.name}_sink", **common)
            results = LaneResultsOp(self, ledger=chain.ledger, name=f"{chain.name}_results")
            for upstream, downstream in zip(stages, stages[1:] + [sink]):
                self.add_flow(upstream, downstream)
            self.add_flow(sink, results, {("out", "in")})
            if view:
                self._holoviz(sink, pools.get(chain.name), plan.sources[0].images[0].shape)
            firsts[chain.name] = stages[0]
            self.sinks[chain.name], self.results[chain.name] = sink, results

        # the cameras, then triage: with lanes one gate routes, queues and releases batches
        self.feeds = []
        for i, source in enumerate(plan.sources):
            if source.reader is not None:
                self.feeds.append(FrameSourceOp(self, reader=source.reader, source_id=source.source_id,
                                                realtime=source.realtime, max_frames=source.count, name=f"source{i}"))
                continue
            conditions = []
            if source.count is not None:
                conditions.append(CountCondition(self, int(source.count), name=f"source{i}_count"))
            if source.fps:
                conditions.append(PeriodicCondition(self, int(1e9 / source.fps),
                                                    policy=PeriodicConditionPolicy.NO_CATCH_UP_MISSED_TICKS,
                                                    name=f"source{i}_period"))
            self.feeds.append(FrameFeedOp(self, *conditions, source_id=source.source_id, images=source.images,
                                          fps=source.fps, name=f"source{i}"))
        if gated:
            gate = LaneGateOp(self, router=plan.router, routes=routes, inputs=len(plan.sources), name="triage",
                              chains={c.name: GateLane(c.board, c.ledger, c.lane_map, c.depth) for c in chains})
            for i, feed in enumerate(self.feeds):
                self.add_flow(feed, gate, {("out", f"in{i}")})
            for chain in chains:
                self.add_flow(gate, firsts[chain.name], {(f"to_{chain.name}", "in")})
                self.add_flow(self.sinks[chain.name], gate, {("credit", f"credit_{chain.name}")})
            self.gate = gate
        else:
            (chain,) = chains
            triage = LaneTriageOp(self, router=plan.router, routes={l: "out" for l in routes}, name="triage0")
            self.add_flow(self.feeds[0], triage)
            self.add_flow(triage, firsts[chain.name], {("out", "in")})

    def _holoviz(self, sink, pool, frame_shape):
        """Headless Holoviz at the end of the emergency lane; its render buffer is counted."""
        from holoscan.operators import HolovizOp
        from holoscan.resources import BlockMemoryPool, MemoryStorageType

        height, width = int(frame_shape[0]), int(frame_shape[1])
        feed = HolovizFeedOp(self, name="holoviz_feed")
        render_pool = BlockMemoryPool(self, storage_type=MemoryStorageType.DEVICE, block_size=width * height * 4,
                                      num_blocks=3, name="render_buffers")  # RGBA8 render buffer, frame sized
        extra = {"cuda_stream_pool": pool} if pool is not None else {}
        viz = HolovizOp(self, name="holoviz", headless=True, width=width, height=height,
                        tensors=[dict(name="overlay", type="color")], enable_render_buffer_output=True,
                        allocator=render_pool, **extra)
        self.render_counter = RenderCountOp(self, name="render_count")
        self.add_flow(sink, feed, {("view", "in")})
        self.add_flow(feed, viz, {("outputs", "receivers"), ("output_specs", "input_specs")})
        self.add_flow(viz, self.render_counter, {("render_buffer_output", "in")})
        self.holoviz_feed = feed

    def _green_contexts(self, chains) -> dict:
        """Optional: the EMERGENCY chain on its own SMs (gpu.emergency_green_context_sms)."""
        sms = (self.plan.config.get("gpu") or {}).get("emergency_green_context_sms")
        if not sms or not any(Lane.EMERGENCY in c.lanes for c in chains) or len(chains) < 2:
            return {}
        import cupy

        from holoscan.resources import CudaGreenContext, CudaGreenContextPool

        total = cupy.cuda.Device(0).attributes["MultiProcessorCount"]
        if not 0 < int(sms) < total:
            raise ConfigError(f"gpu.emergency_green_context_sms must be between 1 and {total - 1}, got {sms}")
        pool = CudaGreenContextPool(self, dev_id=0, num_partitions=2, sms_per_partition=[int(sms), total - int(sms)],
                                    name="green_contexts")
        out = {}
        for chain in chains:
            index = 0 if Lane.EMERGENCY in chain.lanes else 1
            out[chain.name] = CudaGreenContext(self, cuda_green_context_pool=pool, index=index, name=f"{chain.name}_green")
        return out


# ----------------------------------------------------------------------------- running


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


def run_lanes(plan: LanesPlan) -> dict:
    """Run the lane graph until its sources end (or max_duration_s); return the run's summary."""
    sched = plan.config.get("scheduler") or {}
    app = LanesApp(plan)
    max_ms = int(plan.max_duration_s * 1000) if plan.max_duration_s else -1
    app.scheduler(EventBasedScheduler(app, worker_thread_number=int(sched.get("worker_threads", 8)),
                                      stop_on_deadlock=True, stop_on_deadlock_timeout=200, max_duration_ms=max_ms,
                                      name="lanes_scheduler"))
    tracker = None
    if plan.track_log is not None:
        tracker = app.track(num_start_messages_to_skip=plan.skip_tracked, num_last_messages_to_discard=5,
                            latency_threshold=0)
        tracker.enable_logging(str(plan.track_log), 100)
    interval = sched.get("gil_switch_interval_ms")
    previous = sys.getswitchinterval()
    if interval:
        sys.setswitchinterval(float(interval) / 1000.0)
    pauses = GcPauses()
    if sched.get("gc", "freeze") == "freeze":
        # everything alive now (the model, the buffers, imported modules) is left out of Python's
        # collections while frames flow: a full collection over it pauses every operator
        gc.collect()
        gc.freeze()
    gc.callbacks.append(pauses)
    changes_before = len(plan.router.changes)
    started = time.monotonic()
    try:
        app.run()
    finally:
        gc.callbacks.remove(pauses)
        gc.unfreeze()
        sys.setswitchinterval(previous)
        for runtime in plan.runtimes.values():
            runtime.unbind()  # the application's streams end with it
    wall = time.monotonic() - started
    summary = {
        "mode": plan.mode,
        "device": plan.device,
        "wall_s": round(wall, 3),
        "python_gc": pauses.report(),
        "sources": {s.source_id: {"lane": s.lane.name, "fps": s.fps, "emitted": f.emitted}
                    for s, f in zip(plan.sources, app.feeds)},
        "chains": {},
        "lane_changes": plan.router.changes[changes_before:],
    }
    emitted = sum(f.emitted for f in app.feeds)
    accounted = 0
    for chain in app.chains:
        lanes = chain.ledger.summary()
        accounted += sum(v["processed"] + sum(v["dropped"].values()) for v in lanes.values())
        summary["chains"][chain.name] = {
            "queue_lanes": [l.name for l in chain.lanes],
            "stream_priority": chain.priority,
            "by_frame_lane": lanes,
            "queues": chain.board.stats() if chain.board else None,
            "served_order": chain.board.order[:200] if chain.board else None,
        }
    # every emitted frame must reach a ledger (processed or dropped with its reason): check it
    summary["frames_emitted"] = emitted
    summary["frames_accounted"] = accounted
    summary["lost_in_transport"] = emitted - accounted
    if getattr(app, "render_counter", None) is not None:
        summary["holoviz"] = {"frames_fed": app.holoviz_feed.frames_shown, "render_buffers": app.render_counter.rendered}
    if tracker is not None:
        tracker.end_logging()
        summary["tracker"] = {"paths": list(tracker.get_path_strings()), "log": str(plan.track_log)}
    app.ledgers = {c.name: c.ledger for c in app.chains}
    summary["_app"] = app  # callers take what they need (records), then drop it
    return summary
