"""Soak (issue 13): the real pipeline for 2 minutes on the CPU, the bundled sample looped as a
camera delivers it (`holoburn bench --soak`): resident memory is flat after the warm-up and no
frame is dropped or lost. About 2.1 minutes; marked slow, and in the default run (pyproject's
addopts deselects only `gpu`). The 8-minute GPU soak runs in the lab (README, Benchmarks)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

MINUTES = 2.0
MAX_SLOPE_MIB_PER_MIN = 2.0


@pytest.mark.slow
def test_two_minutes_on_the_cpu_keep_memory_flat_and_every_frame(tmp_path):
    out = tmp_path / "soak"
    run = subprocess.run([sys.executable, "-m", "holoburn.app", "bench", "--soak", "--minutes", str(MINUTES),
                          "--device", "cpu", "--max-slope", str(MAX_SLOPE_MIB_PER_MIN), "--out", str(out)],
                         capture_output=True, text=True, timeout=MINUTES * 60 + 90)
    assert "Traceback" not in run.stderr, run.stderr
    soak = json.loads((out / "soak.json").read_text())
    verdict = soak["verdict"]
    print(run.stdout)  # the figures, for the log
    # exit 1 only for a verdict that is not flat; memory and frames are asserted here, latency is
    # reported (on a shared 2-core machine it moves with the neighbours' load)
    assert run.returncode in (0, 1), run.stderr
    assert run.returncode == (0 if verdict["flat"] else 1)
    slope = soak["rss_slope_mib_per_min"]
    assert slope is not None and slope < MAX_SLOPE_MIB_PER_MIN, f"RSS grows {slope} MiB/min: {soak['samples']}"
    frames = soak["frames"]
    assert frames["in"] > 0 and frames["dropped"] == {} and frames["lost"] == 0, frames
    assert frames["processed"] == frames["in"] == frames["delivered"] == frames["results_lines"], frames
    assert frames["results_lines_broken"] == 0
    assert soak["stopped"] == "end_of_sources"
    assert len(soak["samples"]) >= MINUTES * 60 / soak["interval_s"] - 2
    assert soak["latency_ms"]["first_minute"]["n"] > 0 and soak["latency_ms"]["last_minute"]["n"] > 0
