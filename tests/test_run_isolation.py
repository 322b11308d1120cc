"""`holoburn run` with the routine cameras in processes of their own (app/run/isolation.py):
the urgent cameras stay in the run's process, each routine process writes its cameras' results
under their run-wide ids, summary.json names every process and what it did. On the CPU
`--isolation process` forces it (auto splits only on a GPU)."""
from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
from test_pipeline import holoburn

from holoburn.app.config import load_config
from holoburn.app.run.command import sample_video
from holoburn.app.run.isolation import lane_processes
from holoburn.app.config import ConfigError


def config(**gpu):
    cfg = load_config(None)
    cfg["gpu"].update(gpu)
    return cfg


def test_which_cameras_go_to_which_process():
    specs = ["video:a.mp4@EMERGENCY", "video:b.mp4", "video:c.mp4@BATCH_SCREENING", "video:d.mp4@URGENT", "video:e.mp4"]
    urgent, groups = lane_processes(config(isolation="process", routine_processes=2), specs)
    assert urgent == [(1, specs[0]), (4, specs[3])]
    assert groups == [[(2, specs[1]), (3, specs[2])], [(5, specs[4])]]
    # nothing to split: one camera, only routine cameras, or isolation off
    assert lane_processes(config(isolation="process"), specs[:1]) is None
    assert lane_processes(config(isolation="process"), ["video:b.mp4", "video:e.mp4"]) is None
    assert lane_processes(config(isolation="none"), specs) is None
    # auto splits on a GPU only: this machine has none
    assert lane_processes(config(isolation="auto"), specs) is None
    with pytest.raises(ConfigError, match="gpu.isolation: 'threads' is not one of auto, process, none"):
        load_config(None, {"gpu.isolation": "threads"})


def test_auto_splits_on_a_gpu_only_under_mps(monkeypatch, caplog):
    """auto on a GPU without an MPS daemon: one process (time-sliced processes are slower), said
    in a warning; with a daemon: the routine cameras get processes."""
    import holoburn.app.run.isolation as isolation

    specs = ["video:a.mp4@EMERGENCY", "video:b.mp4", "video:c.mp4"]
    monkeypatch.setattr(isolation, "run_device", lambda config: "cuda")
    monkeypatch.setattr(isolation, "mps_state", lambda: {"active": False, "why": "no MPS control daemon (test)"})
    with caplog.at_level("WARNING", logger="holoburn"):
        assert lane_processes(config(isolation="auto"), specs) is None
    assert "every camera stays in this process, because no MPS control daemon (test)" in caplog.text
    assert lane_processes(config(isolation="process"), specs) is not None  # forced: split anyway
    monkeypatch.setattr(isolation, "mps_state", lambda: {"active": True, "pipe_directory": "/tmp/nvidia-mps"})
    urgent, groups = lane_processes(config(isolation="auto", routine_processes=2), specs)
    assert urgent == [(1, specs[0])] and groups == [[(2, specs[1])], [(3, specs[2])]]


def test_routine_cameras_run_in_their_own_processes(tmp_path):
    video = sample_video()
    copies = []
    for name in ("ward_a.mp4", "ward_b.mp4"):
        shutil.copy(video, tmp_path / name)
        copies.append(tmp_path / name)
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{video}@EMERGENCY", "--source", f"video:{copies[0]}", "--source",
                      f"video:{copies[1]}", "--isolation", "process", "--max-frames", "8", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    here = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert Counter(r["source"] for r in here) == {"video:1": 8}  # the emergency camera, in this process
    for k, sid in ((0, "video:2"), (1, "video:3")):  # run-wide ids, not video:1 again
        theirs = [json.loads(line) for line in (out / f"routine{k}" / "results.jsonl").read_text().splitlines()]
        assert Counter(r["source"] for r in theirs) == {sid: 8}
        assert (out / f"routine{k}" / "overlay.mp4").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["sources"]) == ["video:1"]
    processes = summary["isolation"]["processes"]
    assert [(p["process"], p["sources"], p["exit_code"], p["processed"]) for p in processes] == [
        ("routine0", ["video:2"], 0, 8), ("routine1", ["video:3"], 0, 8)]
    assert summary["isolation"]["mps"] is None  # not a GPU run: MPS not asked about
    # no location reaches any output: the file names of the copies stay out of every file written
    for path in out.rglob("*.json*"):
        assert "ward_" not in path.read_text(), path


def test_a_routine_process_that_fails_is_reported_and_fails_the_run(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{sample_video()}@EMERGENCY", "--source", f"video:{broken}",
                      "--isolation", "process", "--max-frames", "5", "--out", out)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "routine0: exit 2" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processed"] == 5  # the emergency camera's frames are all there
    assert summary["isolation"]["processes"][0]["exit_code"] == 2


def test_a_stop_signal_reaches_the_routine_processes(tmp_path):
    """The urgent camera (one picture) ends first; a SIGTERM while the run waits for its routine
    camera is passed on: the routine process writes what it has, the run reports the stop."""
    import signal
    import subprocess
    import sys
    import time

    import cv2

    picture = tmp_path / "picture.png"
    reader = cv2.VideoCapture(str(sample_video()))
    ok, frame = reader.read()
    assert ok
    cv2.imwrite(str(picture), frame)
    long_video = tmp_path / "long.mp4"  # 20 s at 30 fps, played as a camera delivers it
    writer = cv2.VideoWriter(str(long_video), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (frame.shape[1], frame.shape[0]))
    for _ in range(600):
        writer.write(frame)
    writer.release()
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "holoburn.app", "run", "--source", f"image:{picture}@EMERGENCY",
                             "--source", f"video:{long_video}", "--isolation", "process", "--realtime", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ((out / "summary.json").is_file() and (out / "routine0" / "results.jsonl").is_file()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    time.sleep(1.0)  # the routine camera is playing
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    theirs = json.loads((out / "routine0" / "summary.json").read_text())
    assert 0 < theirs["processed"] < 600  # stopped early, everything it took accounted for
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processed"] == 1 and summary["isolation"]["processes"][0]["exit_code"] == 143


@pytest.mark.gpu
def test_on_a_gpu_isolation_splits_the_run(tmp_path):
    """Lab only: `--isolation process` on a GPU puts the routine cameras in processes of their own,
    each on the GPU, with or without an MPS daemon (whichever the machine has, named in
    summary.json), and every camera's frames are accounted for. (Passed in the lab as `auto`,
    before auto required MPS.)"""
    from holoburn.engines.backend import cuda_available

    if not cuda_available():
        pytest.skip("needs a CUDA device")
    video = sample_video()
    routine = []
    for name in ("bay_1.mp4", "bay_2.mp4", "bay_3.mp4"):
        shutil.copy(video, tmp_path / name)
        routine += ["--source", f"video:{tmp_path / name}"]
    out = tmp_path / "out"
    result = holoburn("run", "--source", f"video:{video}@EMERGENCY", *routine, "--isolation", "process",
                      "--max-frames", "8", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    iso = summary["isolation"]
    assert iso["mode"] == "process" and isinstance(iso["mps"]["active"], bool)
    assert summary["processed"] == 8
    # two routine processes (gpu.routine_processes): two cameras and one
    assert [(p["exit_code"], p["processed"]) for p in iso["processes"]] == [(0, 16), (0, 8)]
    assert sorted(s for p in iso["processes"] for s in p["sources"]) == ["video:2", "video:3", "video:4"]
