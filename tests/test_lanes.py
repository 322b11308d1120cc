"""Priority lanes without a GPU: policies, queues, drop accounting, batching, the order lanes are
served in, stream priorities, the lanes config, and the real lane graph on the CPU."""
from __future__ import annotations

import numpy as np
import pytest

from holoburn.processing.lanes import (
    DROPPED_OLDEST,
    REFUSED_NEWEST,
    LaneBoard,
    LaneConfigError,
    LanePolicy,
    LaneQueue,
    lane_buffer_bytes,
    stream_priority,
)
from holoburn.clinical.triage import Lane, LaneRouter

# ----------------------------------------------------------------------------- policies


def test_emergency_never_batches():
    with pytest.raises(LaneConfigError, match="EMERGENCY.*never batches"):
        LanePolicy(Lane.EMERGENCY, batch_size=4, queue_capacity=4)
    assert LanePolicy(Lane.EMERGENCY).batch_size == 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=8, queue_capacity=4), "queue_capacity 4 is smaller than batch_size 8"),
    (dict(drop="random"), "drop must be one of oldest, newest"),
    (dict(depth=0), "depth"),
    (dict(memory="borrowed"), "memory must be one of"),
    (dict(stream_priority="urgentest"), "stream_priority"),
    (dict(pool_mb=0), "pool_mb"),
])
def test_bad_policies_name_lane_key_and_value(kwargs, message):
    with pytest.raises(LaneConfigError, match=message) as err:
        LanePolicy(Lane.ROUTINE, **kwargs)
    assert "lane ROUTINE" in str(err.value)


def test_stream_priorities_come_from_the_device_range():
    least, greatest = 0, -5  # an H100
    assert stream_priority("highest", least, greatest) == -5
    assert stream_priority("lowest", least, greatest) == 0
    assert stream_priority("high", least, greatest) == -3
    assert stream_priority("low", least, greatest) == -2
    assert stream_priority(-9, least, greatest) == -5 and stream_priority(3, least, greatest) == 0  # clamped
    # another device, another range: same levels, other numbers (nothing is hard-coded)
    assert stream_priority("highest", 0, -2) == -2 and stream_priority("lowest", 0, -2) == 0
    assert stream_priority("highest", 0, 0) == 0  # a device without priorities
    with pytest.raises(LaneConfigError):
        stream_priority("asap", 0, -5)


def test_buffer_sizes_of_a_1080p_emergency_lane_fit_the_seed_pool():
    sizes = lane_buffer_bytes(1080, 1920, 512, 6)
    assert sizes["staging"] == 1080 * 1920 * 3 and sizes["model_input"] == 3 * 512 * 512 * 4
    assert sum(sizes.values()) * 8 < 2048 << 20  # eight buffer sets well inside the 2 GB reservation


# ----------------------------------------------------------------------------- queues


def test_full_queue_drops_the_oldest_and_counts_it():
    q = LaneQueue(LanePolicy(Lane.ROUTINE, batch_size=2, queue_capacity=3))
    assert [q.push(i) for i in range(3)] == [[], [], []]
    assert q.push(3) == [(0, DROPPED_OLDEST)]
    assert q.push(4) == [(1, DROPPED_OLDEST)]
    assert q.pop_batch() == [2, 3] and q.pop_batch() == [4] and q.pop_batch() == []
    assert q.drops == {DROPPED_OLDEST: 2} and q.pushed == 5


def test_drop_newest_keeps_what_is_queued():
    q = LaneQueue(LanePolicy(Lane.BATCH_SCREENING, batch_size=1, queue_capacity=2, drop="newest"))
    q.push("a"), q.push("b")
    assert q.push("c") == [("c", REFUSED_NEWEST)]
    assert q.pop_batch() == ["a"] and q.drops == {REFUSED_NEWEST: 1}


def board_with(depth=None):
    return LaneBoard([
        LanePolicy(Lane.ROUTINE, batch_size=4, queue_capacity=8, depth=2),
        LanePolicy(Lane.EMERGENCY, batch_size=1, queue_capacity=2, depth=2),
        LanePolicy(Lane.URGENT, batch_size=2, queue_capacity=4, depth=2),
    ], depth=depth)


def test_board_serves_the_most_urgent_lane_first():
    board = board_with(depth=10)
    for i in range(6):
        board.push(Lane.ROUTINE, f"r{i}")
    board.push(Lane.URGENT, "u0")
    board.push(Lane.EMERGENCY, "e0")
    assert board.lanes == [Lane.EMERGENCY, Lane.URGENT, Lane.ROUTINE]
    assert board.next_batch() == (Lane.EMERGENCY, ["e0"])
    assert board.next_batch() == (Lane.URGENT, ["u0"])
    assert board.next_batch() == (Lane.ROUTINE, ["r0", "r1", "r2", "r3"])  # batched, oldest first
    board.push(Lane.EMERGENCY, "e1")  # arrives while routine frames still wait: goes first
    assert board.next_batch() == (Lane.EMERGENCY, ["e1"])
    assert board.next_batch() == (Lane.ROUTINE, ["r4", "r5"])
    assert board.next_batch() is None
    assert board.order == [("EMERGENCY", 1), ("URGENT", 1), ("ROUTINE", 4), ("EMERGENCY", 1), ("ROUTINE", 2)]


def test_board_holds_back_when_its_chain_is_full():
    board = board_with()  # depth: the smallest of its lanes, 2
    for i in range(8):
        board.push(Lane.ROUTINE, i)
    assert board.next_batch() is not None and board.next_batch() is not None
    board.push(Lane.EMERGENCY, "e")
    assert board.next_batch() is None and board.in_flight == 2  # nothing more until a batch is done
    board.done()
    assert board.next_batch() == (Lane.EMERGENCY, ["e"])  # the freed place goes to the emergency
    board.done(), board.done()
    with pytest.raises(RuntimeError, match="without a batch in flight"):
        board.done()


def test_board_drop_accounting_and_drain():
    board = board_with(depth=1)
    dropped = [d for i in range(12) for d in board.push(Lane.ROUTINE, i)]
    assert [d for d, _ in dropped] == [0, 1, 2, 3] and {r for _, r in dropped} == {DROPPED_OLDEST}
    assert board.drops() == {"ROUTINE": {DROPPED_OLDEST: 4}}
    assert board.stats()["ROUTINE"] == {"pushed": 12, "queued": 8, "batches": 0, "dropped": {DROPPED_OLDEST: 4}}
    assert board.drain() == list(range(4, 12)) and board.queued()["ROUTINE"] == 0
    with pytest.raises(KeyError, match="BATCH_SCREENING"):
        board.push(Lane.BATCH_SCREENING, "x")


def test_escalation_moves_a_source_into_the_emergency_queue():
    router = LaneRouter(defaults={"cam": Lane.ROUTINE}, calm_frames=2, evidence=1, window=1)
    board = board_with(depth=10)
    board.push(router.lane_for("cam"), "f0")
    router.observe("cam", 0, {"flags": ["full_thickness_present"]})
    board.push(router.lane_for("cam"), "f1")
    assert board.next_batch() == (Lane.EMERGENCY, ["f1"])  # served before its own older routine frame
    assert router.changes[-1]["to"] == "EMERGENCY"
    assert router.changes[-1]["reason"] == "full-thickness in 1 of last 1 frames"
    router.observe("cam", 1, {"flags": []}), router.observe("cam", 2, {"flags": []})
    assert router.lane_for("cam") is Lane.ROUTINE and router.changes[-1]["reason"] == "calm for 2 frames"


# ----------------------------------------------------------------------------- config


def test_bundled_lanes_config():
    from holoburn.app.config import load_config
    from holoburn.app.graph import lane_policies

    policies = lane_policies(load_config(None))
    emergency = policies[Lane.EMERGENCY]
    assert emergency.batch_size == 1 and emergency.memory == "dedicated" and emergency.pool_mb == 2048
    assert emergency.stream_priority == "highest" and policies[Lane.ROUTINE].stream_priority == "lowest"
    assert policies[Lane.ROUTINE].batch_size > 1 and policies[Lane.ROUTINE].drop == "oldest"


def test_lanes_config_errors_name_the_file_and_key(tmp_path):
    """Lanes are a section of the one config file, checked by the one loader."""
    from holoburn.app.config import load_config
    from holoburn.app.graph import lane_policies
    from holoburn.clinical.errors import BadConfig

    bad = tmp_path / "bedside.yaml"
    bad.write_text("lanes:\n  ROUTINE:\n    batch_szie: 4\n")
    with pytest.raises(BadConfig, match=r"lanes\.ROUTINE\.batch_szie: unknown key") as err:
        load_config(bad)
    assert str(bad) in str(err.value)
    bad.write_text("lanes:\n  EMERGENCY:\n    batch_size: 2\n    queue_capacity: 4\n")
    with pytest.raises(BadConfig, match=r"EMERGENCY.*never batches"):
        lane_policies(load_config(bad))


# ----------------------------------------------------------------------------- the graph on the CPU


def colour_frame(rgb, shape=(48, 64)):
    """A picture of one colour with some texture (a flat picture is rightly judged blurred)."""
    frame = np.zeros((*shape, 3), np.uint8)
    frame[:] = rgb
    frame[::4] = np.clip(np.asarray(rgb, np.int16) + 20, 0, 255)
    return frame


RED = (230, 20, 20)  # the tiny test model calls red full thickness
GREEN = (20, 230, 20)  # and green healthy skin


def cam(source_id, image, lane, fps, count):
    """A camera stand-in: one picture delivered `count` times, paced at `fps` (None: as fast as taken)."""
    from holoburn.app.graph import SourceSpec
    from holoburn.media.video import FrameListReader

    return SourceSpec(source_id, reader=FrameListReader([image] * count, fps or 30.0, source_id), lane=lane, fps=fps,
                      max_frames=count)


def cpu_plan(tiny_card, sources, mode="lanes", escalate=False, overrides=None):
    from holoburn.app.config import load_config
    from holoburn.app.graph import GraphPlan, buffer_slack, build_runtimes, lane_policies, lanes_in_use
    from holoburn.engines.backend import open_backend
    from holoburn.engines.card import load_card
    from holoburn.processing.ledger import Ledger

    card = load_card(tiny_card)
    config = load_config(None)
    for lane, settings in (overrides or {}).items():
        config["lanes"][lane].update(settings)
    config["scheduler"]["worker_threads"] = 2
    policies = lane_policies(config)
    router = LaneRouter({s.source_id: s.lane for s in sources}, escalate=escalate, calm_frames=1000,
                        evidence=config["triage"]["escalate_after"], window=config["triage"]["escalate_window"])
    backend = open_backend(card, "onnxruntime", "fp32", device="cpu", threads=1)
    lanes = [sources[0].lane] if mode == "chain" else lanes_in_use(sources, router)
    runtimes, _ = build_runtimes(lanes, policies, device="cpu", card=card, open_backend_for=lambda lane: backend,
                                 sources=sources, render=False, extra_slots=buffer_slack(mode, "cpu"))
    return GraphPlan(sources=sources, policies=policies, runtimes=runtimes, router=router, results=Ledger(),
                     device="cpu", mode=mode, config=config)


def run(plan):
    from holoburn.app.graph import lanes_summary, run_graph

    return lanes_summary(run_graph(plan)), plan.results.trips


def test_cpu_lanes_serve_emergency_frames_before_queued_routine_frames(tiny_card):
    big = (240, 320)  # big enough that the routine cameras, unpaced, outrun the chain
    sources = [cam("cam:e", colour_frame(GREEN, big), Lane.EMERGENCY, 25.0, 8)]
    sources += [cam(f"cam:r{i}", colour_frame(GREEN, big), Lane.ROUTINE, None, 200) for i in range(3)]
    summary, records = run(cpu_plan(tiny_card, sources, overrides={"ROUTINE": {"queue_capacity": 12, "batch_size": 4}}))

    # every frame accounted for: processed or dropped with its reason, nothing lost on the way
    assert summary["frames_emitted"] == 8 + 600 == summary["frames_accounted"] and summary["lost_in_transport"] == 0
    lanes = summary["by_frame_lane"]
    assert lanes["EMERGENCY"]["processed"] == 8 and lanes["EMERGENCY"]["dropped"] == {}
    routine = lanes["ROUTINE"]
    assert routine["processed"] + sum(routine["dropped"].values()) == 600
    assert set(routine["dropped"]) <= {"queue_full_dropped_oldest", "queued_at_stop"}
    assert routine["dropped"].get("queue_full_dropped_oldest", 0) > 0  # the routine lane was saturated
    # the queue board saw the same drops
    assert summary["chains"]["cpu"]["queues"]["ROUTINE"]["dropped"]["queue_full_dropped_oldest"] == \
        routine["dropped"]["queue_full_dropped_oldest"]

    # priority: no routine frame waiting when an emergency frame arrived was taken before it (it
    # was taken after it, or dropped for a newer frame while it waited)
    emergency = [r for r in records if r.lane == "EMERGENCY"]
    waiting_routine = 0
    for e in emergency:
        for r in records:
            if r.lane == "ROUTINE" and r.queued_ns < e.queued_ns and (r.dequeued_ns is None or r.dequeued_ns > e.queued_ns):
                waiting_routine += 1
                assert r.dequeued_ns is None or r.dequeued_ns >= e.dequeued_ns, \
                    "a queued routine frame went before an emergency frame"
    assert waiting_routine > 0  # there were routine frames waiting (the check above meant something)

    # batching: emergency frames alone, routine frames up to the lane's batch size
    served = summary["chains"]["cpu"]["served_order"]
    assert all(n == 1 for lane, n in served if lane == "EMERGENCY")
    assert max(n for lane, n in served if lane == "ROUTINE") == 4


def test_one_chain_per_lane_as_on_a_gpu(tiny_card):
    """The GPU graph's shape (a chain per lane, the emergency stages fused), run on the CPU."""
    sources = [cam("cam:e", colour_frame(GREEN), Lane.EMERGENCY, 40.0, 10)]
    sources += [cam(f"cam:r{i}", colour_frame(GREEN), Lane.ROUTINE, None, 80) for i in range(2)]
    plan = cpu_plan(tiny_card, sources, overrides={"ROUTINE": {"queue_capacity": 8, "batch_size": 4}})
    plan.per_lane_chains = True
    plan.config["gpu"]["fuse_stages"] = ["EMERGENCY"]
    summary, records = run(plan)
    assert set(summary["chains"]) == {"emergency", "routine"}
    assert summary["frames_emitted"] == 170 == summary["frames_accounted"]
    emergency = [r for r in records if r.lane == "EMERGENCY"]
    assert len(emergency) == 10 and all(r.done_ns for r in emergency)
    assert [s for s, _, _ in emergency[0].trace] == ["process", "sink"]  # fused: one operator, then the sink
    routine = [r for r in records if r.lane == "ROUTINE" and r.done_ns]
    assert [s for s, _, _ in routine[0].trace] == ["preprocess", "inference", "postprocess", "overlay", "sink"]
    assert summary["chains"]["emergency"]["served_order"] == [["EMERGENCY", 1]] * 10 or \
        summary["chains"]["emergency"]["served_order"] == [("EMERGENCY", 1)] * 10


def test_cpu_single_lane_comparison_queues_everything_together(tiny_card):
    sources = [cam("cam:e", colour_frame(GREEN), Lane.EMERGENCY, 40.0, 5),
               cam("cam:r", colour_frame(GREEN), Lane.ROUTINE, None, 40)]
    summary, records = run(cpu_plan(tiny_card, sources, mode="single_lane"))
    chain = summary["chains"]["single"]
    assert chain["queue_lanes"] == ["ROUTINE"] and set(chain["queues"]) == {"ROUTINE"}
    assert {r.queue_lane for r in records} == {"ROUTINE"}
    assert {r.lane for r in records} == {"EMERGENCY", "ROUTINE"}  # frames keep their clinical lane
    assert summary["frames_emitted"] == summary["frames_accounted"] == 45


def test_cpu_escalation_reroutes_a_source_and_logs_the_change(tiny_card, caplog):
    sources = [cam("cam:burn", colour_frame(RED), Lane.ROUTINE, 30.0, 12),
               cam("cam:calm", colour_frame(GREEN), Lane.ROUTINE, 30.0, 12)]
    with caplog.at_level("INFO", logger="holoburn.triage"):
        summary, records = run(cpu_plan(tiny_card, sources, escalate=True))
    changes = summary["lane_changes"]
    assert [(c["source"], c["from"], c["to"]) for c in changes] == [("cam:burn", "ROUTINE", "EMERGENCY")]
    assert changes[0]["reason"].startswith("full-thickness in 3 of last")
    assert any("lane change: cam:burn" in m for m in caplog.messages)
    burn = sorted((r for r in records if r.source == "cam:burn"), key=lambda r: r.index)
    assert burn[0].lane == "ROUTINE" and burn[-1].lane == "EMERGENCY" and burn[-1].queue_lane == "EMERGENCY"
    assert {r.lane for r in records if r.source == "cam:calm"} == {"ROUTINE"}


def test_cpu_chain_mode_is_tracked_from_source_to_results(tiny_card, tmp_path):
    from holoburn.app.graph import parse_flow_log

    sources = [cam("cam:e", colour_frame(GREEN), Lane.EMERGENCY, 50.0, 20)]
    plan = cpu_plan(tiny_card, sources, mode="chain")
    plan.track_log = tmp_path / "flow.log"
    plan.skip_tracked = 0
    summary, records = run(plan)
    assert summary["frames_emitted"] == 20 == sum(1 for r in records if r.done_ns)
    paths = parse_flow_log(plan.track_log)
    full = [p for p in paths if p.startswith("source0,triage,") and p.endswith("_results")]
    assert full and len(paths[full[0]]) == 20 and min(paths[full[0]]) > 0


def test_parse_flow_log(tmp_path):
    from holoburn.app.graph import parse_flow_log

    log = tmp_path / "flow.log"
    log.write_text("1:\n(src,1000,1100) -> (mid,1200,1300) -> (sink,1400,3500) \n\n"
                   "2:\n(src,5000,5100) -> (sink,5400,6000) \n\n")
    assert parse_flow_log(log) == {"src,mid,sink": [2.5], "src,sink": [1.0]}


def test_a_dropped_frame_leaves_its_batch_and_the_rest_is_processed(tiny_card):
    """A batch holding a frame without a picture (a source that ended or lost its camera) and one
    the model cannot take: those two are counted with their reasons, the others get results."""
    from holoburn.app.config import load_config
    from holoburn.app.graph import build_runtimes, lane_policies
    from holoburn.engines.backend import open_backend
    from holoburn.engines.card import load_card
    from holoburn.processing.frame import Frame
    from holoburn.processing.runtime import LaneBatch

    card = load_card(tiny_card)
    backend = open_backend(card, "onnxruntime", "fp32", device="cpu", threads=1)
    runtimes, _ = build_runtimes([Lane.ROUTINE], lane_policies(load_config(None)), device="cpu", card=card,
                                 open_backend_for=lambda lane: backend, render=False)
    runtime = runtimes[Lane.ROUTINE]
    frames = [Frame.of("a", 0, 0.0, colour_frame(RED)), Frame.of("b", 0, 0.0, None, status="no_signal"),
              Frame.of("c", 0, 0.0, np.zeros((8, 8), np.uint8)), Frame.of("d", 0, 0.0, colour_frame(GREEN))]
    batch = LaneBatch(Lane.ROUTINE, frames)
    runtime.run_through(batch)
    runtime.release(batch)
    assert [f.status for f in frames] == ["ok", "no_signal", "not_rgb", "ok"]
    assert frames[0].findings["triage"]["level"] == "refer"  # red: full thickness
    assert frames[3].findings["pixels"]["full_thickness"] == 0  # green: healthy skin
    assert sorted(runtime._free) == list(range(runtime.slots))  # the buffer set came back
