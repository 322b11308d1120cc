"""The isolated step of `holoburn bench --lanes`: the emergency camera in the benchmark's process,
the routine cameras in worker processes (app/benchmarks/isolation.py). Run here on the CPU
(ONNX Runtime, no MPS, no GPU): the processes start, wait for each other, play together and
report; under MPS and on GPUs it is measured in the lab (bench/lab_saturated.sh)."""
from __future__ import annotations

import json

from test_pipeline import holoburn

import pytest

from holoburn.app.benchmarks.isolation import ProcessSet, process_sets
from holoburn.processing.isolation import split_streams, worker_env, worker_gpus


def test_cameras_and_gpus_are_shared_out_among_workers():
    assert split_streams(8, 3) == [3, 3, 2]
    assert split_streams(2, 4) == [1, 1]  # a worker without a camera is not started
    assert worker_gpus(3, gpus=1) == [None, None, None]  # one GPU: shared
    assert worker_gpus(3, gpus=2) == [1, 1, 1]  # the emergency process keeps GPU 0 to itself
    assert worker_gpus(4, gpus=4) == [1, 2, 3, 1]
    assert worker_gpus(2, gpus=0) == [None, None]


def test_routine_process_sets_are_read_and_placed_in_each_environment():
    assert process_sets("2x60, 4x30low") == [ProcessSet(2, 60), ProcessSet(4, 30, "below_normal")]
    assert [s.label for s in process_sets("2x60,4x30low")] == ["2x60", "4x30low"]
    for bad in ("", "2x", "60", "2x0", "0x50", "2x101", "2x60high"):
        with pytest.raises(ValueError, match="WORKERSxSM_PERCENT|no routine process set"):
            process_sets(bad)
    mps = {"active": True}
    env = worker_env(1, 40, mps, "below_normal")
    assert (env["CUDA_VISIBLE_DEVICES"], env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"], env["CUDA_MPS_CLIENT_PRIORITY"]) == \
        ("1", "40", "1")
    assert worker_env(None, 40, mps)["CUDA_MPS_CLIENT_PRIORITY"] == "0"
    plain = worker_env(None, 40, {"active": False}, "below_normal")  # no MPS: nothing of it is set
    assert not {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "CUDA_MPS_CLIENT_PRIORITY"} & (set(plain) - set(__import__("os").environ))


def test_routine_workers_play_beside_the_emergency_process(tmp_path):
    out = tmp_path / "bench"
    result = holoburn("bench", "--lanes", "--device", "cpu", "--steps", "isolated", "--seconds", "3", "--warm", "1",
                      "--routine-streams", "3", "--routine-fps", "4", "--routine-processes", "2x50low", "--out", out, "--name", "iso.json")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((out / "iso.json").read_text())
    step = report["isolated"]
    assert report["errors"] == {}
    assert [w["cameras"] for w in step["workers"]] == [2, 1]
    assert step["processes"] == "2x50low"
    # without MPS neither the SM share nor the client priority is claimed
    assert {(w["sm_percent"], w["mps_client_priority"]) for w in step["workers"]} == {(None, None)}
    # no MPS daemon here: said in the results and in the log, never silently
    assert step["mps"]["active"] is False and "nvidia-cuda-mps-control" in step["mps"]["why"]
    assert "without CUDA MPS" in result.stderr + result.stdout
    # the emergency camera alone in this process: only its own lane ran here
    assert step["emergency_latency_ms"]["n"] >= 2
    assert set(step["summary"]["by_frame_lane"]) == {"EMERGENCY"}
    # the routine cameras played in the workers, at the same time (their window overlaps ours)
    assert step["routine_fps"] > 0
    assert len(step["routine_latency_ms_per_worker"]) == 2
    assert all(set(acc) == {"ROUTINE"} for acc in step["routine_accounting_per_worker"])
    assert step["worker_allocations_after_warmup"] == [0, 0]  # CPU lanes allocate nothing that is counted


def test_the_lanes_benchmark_sets_holoburn_beside_its_peer(tmp_path):
    """The peer step (app/benchmarks/peer.py) plays the same cameras as the lanes step, in the same
    run, and the results carry both ratios the issue asks for."""
    out = tmp_path / "bench"
    result = holoburn("bench", "--lanes", "--device", "cpu", "--steps", "lanes,peer", "--seconds", "3", "--warm", "1",
                      "--routine-streams", "2", "--routine-fps", "4", "--out", out, "--name", "lp.json")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((out / "lp.json").read_text())
    lanes, peer = report["lanes"], report["peer"]
    assert lanes["emergency_frames"]["offered"] == lanes["emergency_frames"]["processed"] > 0
    assert peer["routine_streams"] == 2 and peer["emergency_frames"]["processed"] > 0
    versus = report["versus_peer"]["lanes"]
    assert versus["peer_p99_over_holoburn_p99"] == round(peer["emergency_latency_ms"]["p99"] / lanes["emergency_latency_ms"]["p99"], 2)
    assert versus["holoburn_fps_over_peer_fps"] == round(lanes["routine_fps"] / peer["routine_fps"], 2)


def test_mps_counts_as_running_only_while_its_daemon_listens(tmp_path, monkeypatch):
    """A control daemon that has quit leaves its socket file: the lab's call found `auto` splitting a
    run for an MPS that was gone."""
    import socket

    from holoburn.processing.isolation import mps_state

    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    assert mps_state()["active"] is False and "does not exist" in mps_state()["why"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as daemon:
        daemon.bind(str(tmp_path / "control"))  # the file is there, nobody listens
        state = mps_state()
        assert state["active"] is False and "no longer running" in state["why"]
        daemon.listen(1)
        assert mps_state() == {"active": True, "pipe_directory": str(tmp_path)}
