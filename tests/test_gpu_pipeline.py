"""The GPU lanes on a CUDA device: run in the GPU lab with `python3 -m pytest -m gpu tests/test_gpu_pipeline.py`.

- the fused lane kernels compute what the reference functions compute, to the bit;
- the GPU path and the CPU path (ONNX Runtime) give the same masks on the same frames;
- the emergency lane's buffers are never reallocated, over 1000 frames;
- an emergency frame injected into a saturated graph completes before the routine frames that
  were queued when it arrived.
"""
from __future__ import annotations

import json

import numpy as np
import pytest



def _cuda() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device
        return False


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _cuda(), reason="needs a CUDA device (CuPy with a visible GPU)")]


class ColourBackend:
    """conftest.tiny_onnx in torch on the GPU (red votes full thickness, green healthy skin),
    on the caller's stream; fp32 without TF32, like ONNX Runtime on the CPU."""

    name = "torch-colour-test"

    def __init__(self):
        import torch

        weight = torch.zeros(6, 3, 1, 1)
        weight[5, 0] = 1.0
        weight[1, 1] = 1.0
        self.weight = weight.cuda()

    def infer(self, batch, stream=None):
        import cupy
        import torch

        lane = torch.cuda.ExternalStream(stream) if stream else torch.cuda.current_stream()
        with torch.cuda.stream(lane):
            return cupy.from_dlpack(torch.nn.functional.conv2d(torch.from_dlpack(batch), self.weight))


@pytest.fixture(autouse=True)
def no_tf32():
    import torch

    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = saved


def policy(lane_name="EMERGENCY", **overrides):
    from holoburn.app.config import load_config
    from holoburn.app.graph import lane_policies
    from holoburn.clinical.triage import Lane

    config = load_config(None)
    config["lanes"][lane_name].update(overrides)
    return lane_policies(config)[Lane.parse(lane_name)]


def run_batch(runtime, images, lane="EMERGENCY"):
    from holoburn.processing.frame import Frame
    from holoburn.processing.runtime import LaneBatch

    batch = runtime.run_through(LaneBatch(runtime.lane, [Frame.of("test", i, 0.0, im, lane=lane)
                                                          for i, im in enumerate(images)]))
    runtime.release(batch)  # outputs stay readable until the lane's next batch takes the set
    return batch


def blocks(height, width, block, seed):
    """A frame of flat colour blocks (red, green, grey, skin-like)."""
    rng = np.random.default_rng(seed)
    palette = np.array([(230, 20, 20), (20, 230, 20), (128, 128, 128), (200, 150, 120)], np.uint8)
    grid = rng.integers(0, len(palette), (-(-height // block), -(-width // block)))
    return np.ascontiguousarray(palette[grid].repeat(block, 0).repeat(block, 1)[:height, :width])


def test_fused_kernels_match_the_reference_functions(tiny_card):
    import cupy as cp

    from holoburn.clinical.assessability import UNCERTAIN
    from holoburn.clinical.overlay import tint
    from holoburn.engines.card import load_card
    from holoburn.processing.preprocess import prepare_input
    from holoburn.processing.runtime import GpuLaneRuntime, masks_of
    from holoburn.processing.preprocess import segment

    card = load_card(tiny_card)
    backend = ColourBackend()
    sizes = ((1080, 1920), (480, 640), (301, 517), (64, 64))
    runtime = GpuLaneRuntime(policy(pool_mb=512), card=card, backend=backend, frame_sizes=sizes, slots=2)
    runtime.bind(None, "test stream")
    rng = np.random.default_rng(0)
    for height, width in sizes:
        frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        batch = run_batch(runtime, [frame])
        got_input = cp.asnumpy(runtime.model_input[batch.slot][0])
        got_mask, got_overlay = cp.asnumpy(batch.live[0].mask), cp.asnumpy(batch.live[0].overlay)
        runtime.release(batch)
        ref_input, box = prepare_input(cp.asarray(frame), card.input_size, card.mean, card.std)
        np.testing.assert_array_equal(got_input, cp.asnumpy(ref_input[0]))
        ref_mask = segment(backend.infer(ref_input), box)
        np.testing.assert_array_equal(got_mask, cp.asnumpy(ref_mask))
        # what is shown and counted (uncertain burn marked), the out-of-domain score: host reference
        logits = cp.asnumpy(backend.infer(ref_input))[0]
        mask, shown, expected = masks_of(logits, box, runtime.limits)
        np.testing.assert_array_equal(got_mask, mask)
        np.testing.assert_array_equal(got_overlay, cp.asnumpy(tint(cp.asarray(frame), cp.asarray(shown), runtime.alpha)))
        counts = [int((shown == c).sum()) for c in range(6)]
        findings = batch.live[0].findings
        assert findings["assessable"], findings
        assert [findings["pixels"][n] for n in findings["pixels"]] == counts
        assert findings["uncertain_pixels"] == int((shown == UNCERTAIN).sum()) > 0  # noise: small regions
        assert findings["skin_confidence"] == pytest.approx(expected, rel=1e-4)


def test_gpu_lanes_mark_uncertain_burn_like_the_cpu(tiny_card):
    from holoburn.engines.backend import open_backend
    from holoburn.engines.card import load_card
    from holoburn.processing.runtime import CpuLaneRuntime, GpuLaneRuntime

    card = load_card(tiny_card)
    gpu = GpuLaneRuntime(policy(pool_mb=512), card=card, backend=ColourBackend(), frame_sizes=((64, 64),), slots=2)
    cpu = CpuLaneRuntime(policy(), card=card, backend=open_backend(card, "onnxruntime", "fp32", device="cpu"),
                         render=False)
    gpu.bind(None, "test stream")
    for seed, block in ((0, 8), (1, 8), (2, 3), (3, 2), (4, 1)):  # blocks of 1-3 px: regions below min_region_px
        g, c = run_batch(gpu, [blocks(64, 64, block, seed)]), run_batch(cpu, [blocks(64, 64, block, seed)])
        for key in ("pixels", "uncertain_pixels"):
            assert g.frames[0].findings[key] == c.frames[0].findings[key], (seed, key)


def test_gpu_and_cpu_paths_give_the_same_masks(tiny_card):
    import cupy as cp

    from holoburn.engines.backend import open_backend
    from holoburn.engines.card import load_card
    from holoburn.processing.runtime import CpuLaneRuntime, GpuLaneRuntime

    card = load_card(tiny_card)
    gpu = GpuLaneRuntime(policy(pool_mb=512), card=card, backend=ColourBackend(),
                         frame_sizes=((64, 64), (1080, 1920)), slots=2)
    cpu = CpuLaneRuntime(policy(), card=card, backend=open_backend(card, "onnxruntime", "fp32", device="cpu"),
                         render=False)
    gpu.bind(None, "test stream")
    # frames at the model's own size: no resampling anywhere, so the paths must agree exactly
    for seed in range(4):
        frame = blocks(64, 64, 8, seed)
        g = run_batch(gpu, [frame])
        c = run_batch(cpu, [frame])
        np.testing.assert_array_equal(cp.asnumpy(g.frames[0].mask), c.frames[0].mask)
        assert g.frames[0].findings["pixels"] == c.frames[0].findings["pixels"]
        gpu.release(g)
    # 1080p: the CPU letterbox resamples with OpenCV's INTER_AREA, the GPU bilinearly
    # (processing.preprocess), so only pixels on colour edges may differ
    frame = blocks(1080, 1920, 120, 7)
    g = run_batch(gpu, [frame])
    c = run_batch(cpu, [frame])
    agreement = float((cp.asnumpy(g.frames[0].mask) == c.frames[0].mask).mean())
    gpu.release(g)
    assert agreement > 0.99, agreement


def burn_unet_card(tmp_path):
    """The shipped card when its weights are there, else a random-weight BurnUNet card."""
    import torch
    import yaml

    from holoburn.engines.card import DEFAULT_CARD, load_card
    from holoburn.engines.unet import build_model

    if DEFAULT_CARD.is_file() and (DEFAULT_CARD.parent / "burn_unet_v2.pt").is_file():
        return load_card(DEFAULT_CARD)
    torch.manual_seed(0)
    torch.save(build_model(6).state_dict(), tmp_path / "m.pt")
    (tmp_path / "m.onnx").write_bytes(b"not read by the torch backend")
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({
        "model_id": "m", "onnx": "m.onnx", "torch_state_dict": "m.pt", "input": {"name": "frames", "size": 256},
        "output": {"name": "logits", "channels": 6}, "intended_use": "test",
        "classes": ["background", "healthy_skin", "superficial", "superficial_partial", "deep_partial", "full_thickness"],
        "normalisation": {"mean": [128, 128, 128], "std": [64, 64, 64]}}))
    return load_card(tmp_path / "m.yaml")


def test_emergency_buffers_are_never_reallocated(tmp_path):
    import cupyx
    import torch

    from holoburn.engines.backend import open_backend
    from holoburn.processing.runtime import GpuLaneRuntime

    card = burn_unet_card(tmp_path)
    backend = open_backend(card, "torch", "fp16", device="cuda")
    runtime = GpuLaneRuntime(policy(pool_mb=256), card=card, backend=backend, frame_sizes=((720, 1280),))
    runtime.bind(None, "test stream")
    frames = []
    for seed in range(3):
        pinned = cupyx.empty_pinned((720, 1280, 3), np.uint8)
        pinned[...] = blocks(720, 1280, 80, seed)
        frames.append(pinned)
    for i in range(10):  # warm-up
        runtime.release(run_batch(runtime, [frames[i % 3]]))
    runtime.freeze()

    def pointers():
        g = runtime.geometries[(720, 1280)]
        ptrs = [a.data.ptr for group in (runtime.model_input, runtime.square_mask, runtime.counts, g.frames, g.masks,
                                         g.overlays) for a in group]
        for _, static_in, static_out in getattr(backend, "_graphs", {}).values():
            ptrs += [static_in.data_ptr(), static_out.data_ptr()]
        return ptrs

    before = pointers()
    torch_before = torch.cuda.memory_stats()
    for i in range(1000):
        batch = run_batch(runtime, [frames[i % 3]])
        assert batch.failed is None and batch.live[0].ok
        runtime.release(batch)
    torch_after = torch.cuda.memory_stats()
    assert pointers() == before
    memory = runtime.memory.report()
    assert memory["kind"] == "dedicated" and memory["requests_after_warmup"] == 0 and memory["failures"] == 0
    assert memory["device_mallocs"] == 1  # the one cudaMalloc of the lane's pool, at start-up
    assert runtime.late_geometries == 0
    assert torch_after["segment.all.allocated"] == torch_before["segment.all.allocated"]  # no cudaMalloc
    assert torch_after["allocation.all.allocated"] == torch_before["allocation.all.allocated"]  # no block taken
    assert runtime.host_copies["upload_from_pinned"] >= 1000


def test_emergency_frame_overtakes_a_saturated_routine_lane(tmp_path):
    import cupyx

    from holoburn.app.config import load_config
    from holoburn.app.graph import (GraphPlan, buffer_slack, build_runtimes, graph_lanes, lane_policies, lanes_in_use,
                                    lanes_summary, run_graph)
    from holoburn.clinical.triage import Lane, LaneRouter
    from holoburn.engines.backend import open_backend
    from holoburn.processing.ledger import Ledger
    from test_lanes import cam

    card = burn_unet_card(tmp_path)
    config = load_config(None)
    config["scheduler"]["worker_threads"] = 8
    config["lanes"]["EMERGENCY"]["pool_mb"] = 256
    config["lanes"]["ROUTINE"].update(pool_mb=1024, queue_capacity=16, depth=1)
    policies = lane_policies(config)
    image = cupyx.empty_pinned((1080, 1920, 3), np.uint8)
    image[...] = blocks(1080, 1920, 120, 3)
    # routine cameras unpaced (as fast as the graph takes them): the routine queue stays full
    sources = [cam("cam:e", image, Lane.EMERGENCY, 20.0, 30)]
    sources += [cam(f"cam:r{i}", image, Lane.ROUTINE, None, 1200) for i in range(6)]
    router = LaneRouter({s.source_id: s.lane for s in sources}, escalate=False)
    runtimes, priorities = build_runtimes(
        lanes_in_use(sources, router), policies, device="cuda", card=card, sources=sources,
        extra_slots=buffer_slack("lanes", "cuda"),
        open_backend_for=lambda lane: open_backend(card, "torch", "fp16", device="cuda"), frame_sizes=((1080, 1920),),
        cuda_graph_lanes=graph_lanes(config))  # as a run does: the default's emergency graphs captured at start-up
    plan = GraphPlan(sources=sources, policies=policies, runtimes=runtimes, router=router, results=Ledger(),
                     device="cuda", mode="lanes", config=config, priorities=priorities)
    summary = lanes_summary(run_graph(plan))
    records = plan.results.trips
    assert summary["lost_in_transport"] == 0
    assert priorities[Lane.EMERGENCY] < priorities[Lane.ROUTINE]  # more urgent, inside the device's range
    emergency = [r for r in records if r.lane == "EMERGENCY"]
    assert len(emergency) == 30 and all(r.done_ns for r in emergency)  # none dropped
    routine_drops = summary["by_frame_lane"]["ROUTINE"]["dropped"]
    assert routine_drops.get("queue_full_dropped_oldest", 0) > 0  # the routine lane was saturated
    waiting = served_after = 0
    for e in emergency:
        for r in records:
            # waiting when the emergency frame arrived: queued before it, not yet taken into a batch
            if r.lane == "ROUTINE" and r.queued_ns < e.queued_ns and (r.dequeued_ns is None or r.dequeued_ns > e.queued_ns):
                waiting += 1
                if r.done_ns is not None:  # else dropped for a newer frame while it waited
                    served_after += 1
                    assert r.done_ns > e.done_ns, "a routine frame queued before the emergency frame finished first"
    assert waiting > 0 and served_after > 0


def test_picture_checks_on_the_device_measure_what_the_host_measures(tiny_card):
    """The GPU lanes judge exposure, colour and sharpness from sums made on the device: the same
    PictureStats as clinical.assessability.picture_stats on the host, and the same verdicts."""
    from holoburn.clinical.assessability import PictureStats, picture_problem, picture_stats
    from holoburn.engines.card import load_card
    from holoburn.processing.runtime import GpuLaneRuntime

    card = load_card(tiny_card)
    sizes = ((1080, 1920), (301, 517), (64, 64))
    runtime = GpuLaneRuntime(policy(pool_mb=512), card=card, backend=ColourBackend(), frame_sizes=sizes, slots=2)
    runtime.bind(None, "test stream")
    rng = np.random.default_rng(3)
    frames = []
    for height, width in sizes:
        noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        frames += [noise, (noise // 8).astype(np.uint8), np.repeat(noise[..., :1], 3, axis=2),
                   np.full((height, width, 3), (200, 150, 120), np.uint8), blocks(height, width, 16, 1)]
    verdicts = set()
    for frame in frames:
        batch = run_batch(runtime, [frame])
        got = PictureStats.from_sums(runtime.picture_host[batch.slot][0])
        want = picture_stats(frame)
        # OpenCV's vectorised luma rounds a few pixels one level the other way (lab: 19 levels over the
        # 32,400 thumbnail pixels of a dark 1080p frame) and sums the squared Laplacian in float
        # blocks (7e-5 apart); the device adds exactly. Far below any threshold's resolution.
        for name, rel, absolute in (("grey_mean", 0, 0.01), ("bright_share", 0, 1e-3), ("colour", 1e-4, 0.01),
                                    ("sharpness", 1e-3, 0.01)):
            assert getattr(got, name) == pytest.approx(getattr(want, name), rel=rel, abs=absolute), (frame.shape, name)
        verdict = picture_problem(want, runtime.limits)
        findings = batch.live[0].findings
        assert (findings["not_assessable_reason"] if verdict else verdict) == verdict
        verdicts.add(verdict)
    assert {"image_quality", "not_a_photograph", None} <= verdicts  # dark, grey and good frames among them


def test_one_cuda_graph_per_frame_gives_what_the_stages_give(tmp_path):
    """gpu.cuda_graph_lanes: the emergency lane's device work for one frame captured once and
    replayed gives the very masks, overlays and numbers the stage-by-stage path gives, and
    allocates nothing while it replays."""
    import cupy as cp
    import cupyx
    import torch

    from holoburn.engines.backend import open_backend
    from holoburn.processing.runtime import GpuLaneRuntime

    card = burn_unet_card(tmp_path)
    runtimes = {}
    for graphed in (False, True):
        rt = GpuLaneRuntime(policy(pool_mb=256), card=card, backend=open_backend(card, "torch", "fp16", device="cuda"),
                            frame_sizes=((720, 1280), (480, 640)), slots=2)
        rt.chain_graph = graphed
        rt.bind(None, "test stream")
        runtimes[graphed] = rt
    frames = []
    for seed, (h, w) in enumerate(((720, 1280), (480, 640), (720, 1280), (720, 1280), (480, 640))):
        pinned = cupyx.empty_pinned((h, w, 3), np.uint8)
        pinned[...] = blocks(h, w, 40, seed)
        frames.append(pinned)
    for frame in frames * 4:  # warm-up: every (buffer set, size) seen twice, so captured
        for rt in runtimes.values():
            rt.release(run_batch(rt, [frame]))
    graphed = runtimes[True]
    for rt in runtimes.values():
        rt.freeze()
    replays = graphed.chain_replays
    torch_before = torch.cuda.memory_stats()["allocation.all.allocated"]
    for frame in frames * 3:
        out = {}
        for key, rt in runtimes.items():
            batch = run_batch(rt, [frame])
            f = batch.live[0]
            out[key] = (cp.asnumpy(f.mask), cp.asnumpy(f.overlay), f.findings, batch.chained)
        np.testing.assert_array_equal(out[True][0], out[False][0])
        np.testing.assert_array_equal(out[True][1], out[False][1])
        assert out[True][2] == out[False][2]
        assert out[True][3] and not out[False][3]
    assert graphed.chain_replays - replays == 15
    assert graphed.report()["cuda_graph_chain"]["graphs"] == 4  # 2 buffer sets x 2 frame sizes
    assert graphed.memory.report()["requests_after_warmup"] == 0
    assert torch.cuda.memory_stats()["allocation.all.allocated"] == torch_before


def test_holoviz_shows_the_emergency_lane_headless(tmp_path):
    """Lab only: the bench's holoviz step, Holoviz fed straight by the emergency sink: every batch
    given to Holoviz comes back as a render buffer or is counted as not rendered, and the tracker
    has the path through Holoviz."""
    from test_pipeline import holoburn

    result = holoburn("bench", "--lanes", "--device", "cuda", "--steps", "holoviz", "--seconds", "1.5", "--warm", "0.5",
                      "--out", tmp_path, "--name", "viz.json", timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    step = json.loads((tmp_path / "viz.json").read_text())["holoviz"]
    shown = step["summary"]["holoviz"]
    processed = step["summary"]["by_frame_lane"]["EMERGENCY"]["processed"]
    assert 0 < shown["render_buffers"] <= shown["frames_fed"] <= processed
    assert shown["not_rendered"] == shown["frames_fed"] - shown["render_buffers"]
    assert any(",holoviz," in path for path in step["paths"])


def test_warm_up_captures_every_buffer_set_before_the_first_frame(tmp_path):
    """GpuLaneRuntime.warm_up (build_runtimes calls it for every GPU run): after it, every
    (buffer set, frame size) has its CUDA graph, and real frames neither capture nor allocate."""
    import cupyx

    from holoburn.engines.backend import open_backend
    from holoburn.processing.runtime import GpuLaneRuntime

    card = burn_unet_card(tmp_path)
    rt = GpuLaneRuntime(policy(pool_mb=256), card=card, backend=open_backend(card, "torch", "fp16", device="cuda"),
                        frame_sizes=((720, 1280), (480, 640)), slots=2)
    rt.warm_up(chain_graph=True)
    assert rt.report()["cuda_graph_chain"]["graphs"] == 4  # 2 buffer sets x 2 frame sizes
    rt.bind(None, "test stream")
    replays = rt.chain_replays
    for seed, (h, w) in enumerate(((720, 1280), (480, 640), (720, 1280))):
        pinned = cupyx.empty_pinned((h, w, 3), np.uint8)
        pinned[...] = blocks(h, w, 40, seed)
        assert run_batch(rt, [pinned]).chained
    assert rt.chain_replays - replays == 3
    assert rt.report()["cuda_graph_chain"]["graphs"] == 4
    assert rt.memory.report()["requests_after_warmup"] == 0
