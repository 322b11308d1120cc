"""Holoscan's own distributed application: three fragments as three processes on loopback give
the same results as one process, frame for frame."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

from test_pipeline import holoburn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records(path):
    from conftest import timing_free

    return timing_free(path)


def test_three_fragment_processes_match_one_process(tmp_path, tiny_card, red_green_video):
    common = ["run", "--source", f"video:{red_green_video}", "--model", str(tiny_card)]
    single = holoburn(*common, "--out", tmp_path / "single")
    assert single.returncode == 0, single.stderr

    driver = f"127.0.0.1:{free_port()}"
    out = ["--out", str(tmp_path / "distributed")]
    cmd = [sys.executable, "-m", "holoburn.app", *common, *out]
    procs = [
        subprocess.Popen(cmd + ["--driver", "--worker", "--address", driver, "--fragments", "capture"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
        subprocess.Popen(cmd + ["--worker", "--address", driver, "--worker-address", f"127.0.0.1:{free_port()}",
                                "--fragments", "analysis"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
        subprocess.Popen(cmd + ["--worker", "--address", driver, "--worker-address", f"127.0.0.1:{free_port()}",
                                "--fragments", "display"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
    ]
    try:
        outputs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n\n".join(o[-3000:] for o in outputs)
    assert "frames in" in outputs[2]  # the display process prints the run summary
    distributed = records(tmp_path / "distributed" / "results.jsonl")
    assert len(distributed) == 12
    assert distributed == records(tmp_path / "single" / "results.jsonl")
    summary = json.loads((tmp_path / "distributed" / "summary.json").read_text())
    assert summary["frames_in"] == summary["processed"] == 12 and summary["model_id"] == "tiny"
