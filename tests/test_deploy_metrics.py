"""The x86 image's own command, started here the way the container starts it, scraped while it runs.

No Docker engine runs here, so the test reads the Dockerfile's runtime stage (ENV, WORKDIR,
ENTRYPOINT, CMD, HEALTHCHECK) and runs deploy/entrypoint.sh with bash and the CMD's arguments,
with the same environment. Only what cannot exist on this CPU-only machine is replaced:

* the camera (`--source camera:/dev/video0`) by the bundled sample video, played in a loop
  (`source.loop`), paced as a camera (the preset's `source.realtime`), so the run lasts;
* the preset (`--config bedside-x86.yaml`) by a YAML file that is that preset with three changes:
  `source.loop: true`, `metrics.port` a free loopback port, and `inference.backend: onnxruntime`
  (the preset asks for TensorRT, which needs an NVIDIA GPU and the tensorrt package);
  `metrics.enabled` is left as the preset has it: the image's health check relies on it;
* the container paths: `--out /data/out` and WORKDIR /data by tmp_path, HOLOBURN_ENGINE_CACHE by a
  tmp directory, /opt/holoburn/bin on PATH by a `holoburn` that runs this interpreter.

While it runs, /metrics is polled on 127.0.0.1 until frames are counted, scraped twice to see the
count rise, and the HEALTHCHECK command runs against that port. Then the run is stopped the way
`docker stop` stops it (SIGTERM, then SIGKILL after the grace period) and must be gone. Every wait
is bounded; loopback traffic only.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

pytest.importorskip("prometheus_client", reason="prometheus-client is a runtime dependency of the metrics endpoint")

from test_metrics_endpoint import scrape  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT_SCRIPT = ROOT / "deploy" / "entrypoint.sh"
LOOPBACK = "127.0.0.1"
FIRST_FRAMES_TIMEOUT_S = 45.0  # start (imports, model, graph) until the first frame is counted
# Worst case, every wait at its bound: 45 + 2 x 5 (scrapes) + 2 + 10 (health) + 10 + 5 + 2 s < 90 s.
STOP_GRACE_S = 10.0  # `docker stop`'s default grace period before SIGKILL


# -- the Dockerfile, read -------------------------------------------------------------------------
def runtime_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile's last stage, continuation lines joined and
    comments dropped."""
    out, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not pending and not line):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            out = []  # a new stage: only the last one is the image that runs
        out.append((keyword.upper(), rest.strip()))
    return out


def image() -> dict:
    """What the image runs: entrypoint, cmd, healthcheck argv and options, ENV, WORKDIR."""
    found = {"env": {}}
    for keyword, arguments in runtime_instructions():
        if keyword in ("ENTRYPOINT", "CMD"):
            assert arguments.startswith("["), f"Dockerfile: {keyword} should be in exec form (a JSON array)"
            found[keyword.lower()] = json.loads(arguments)
        elif keyword == "HEALTHCHECK":
            options, _, command = arguments.partition("CMD ")
            assert command.strip().startswith("["), "Dockerfile: HEALTHCHECK CMD should be in exec form"
            found["healthcheck"] = json.loads(command)
            found["healthcheck_options"] = dict(re.findall(r"--([\w-]+)=(\S+)", options))
        elif keyword == "ENV":
            for word in shlex.split(arguments):
                key, _, value = word.partition("=")
                found["env"][key] = value
        elif keyword == "WORKDIR":
            found["workdir"] = arguments
    missing = {"entrypoint", "cmd", "healthcheck", "workdir"} - set(found)
    assert not missing, f"Dockerfile's runtime stage lacks {sorted(missing)}"
    return found


def seconds(duration: str) -> float:
    """A Docker duration such as 10s, 1m30s or 10m, in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts, f"not a Docker duration: {duration}"
    return sum(float(n) * units[u] for n, u in parts)


def option(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"Dockerfile CMD should give {name} once: {argv}"
    return argv[argv.index(name) + 1]


def replace_option(argv: list[str], name: str, value: str) -> list[str]:
    i = argv.index(name)
    return [*argv[:i + 1], value, *argv[i + 2:]]


# -- helpers --------------------------------------------------------------------------------------
def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def total(samples: dict, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def tail(path: Path, chars: int = 4000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = [l for l in text.splitlines() if not l.startswith("frames: ")]  # drop the progress bar
    return "\n".join(lines)[-chars:]


def live_members(pgid: int) -> list[str]:
    """Processes of a process group that still run (zombies awaiting their reaper do not)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(f"{entry.name} {stat[:stat.rindex(')') + 1]}")
    return alive


# -- the test -------------------------------------------------------------------------------------
@pytest.mark.slow  # pyproject addopts deselects only `gpu`: the default run includes it (about 5 s)
def test_image_command_serves_metrics_while_frames_flow(tmp_path):
    from holoburn.app.config import merge, read_yaml
    from holoburn.app.run.command import sample_video

    spec = image()
    assert spec["entrypoint"] == ["/usr/local/bin/holoburn-entrypoint"], \
        "the image's entrypoint is deploy/entrypoint.sh (COPY'd to /usr/local/bin/holoburn-entrypoint)"
    cmd = list(spec["cmd"])
    env_image = spec["env"]
    assert "HOLOBURN_ENGINE_CACHE" in env_image, "the entrypoint needs HOLOBURN_ENGINE_CACHE from the image"

    # the container's paths, here
    workdir = tmp_path / spec["workdir"].strip("/")
    workdir.mkdir(parents=True)
    out_dir = tmp_path / option(cmd, "--out").strip("/")
    bin_dir = tmp_path / "bin"  # /opt/holoburn/bin: a `holoburn` that runs this interpreter
    bin_dir.mkdir()
    launcher = bin_dir / "holoburn"
    launcher.write_text(f'#!/usr/bin/env bash\nexec {shlex.quote(sys.executable)} -m holoburn.app "$@"\n')
    launcher.chmod(0o755)

    # the preset, as the image uses it, with what cannot exist here replaced
    preset = read_yaml(option(cmd, "--config"))
    metrics_cfg = preset.get("metrics", {})
    assert metrics_cfg.get("enabled") is True, \
        "the image's config must enable the metrics endpoint: its HEALTHCHECK (holoburn health) reads it"
    port = free_loopback_port()
    config = merge(preset, {"source": {"loop": True},  # the sample lasts 3 s; a camera never ends
                            "metrics": {"host": LOOPBACK, "port": port},
                            "inference": {"backend": "onnxruntime"}})  # TensorRT needs a GPU
    config_path = tmp_path / "image-config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    video = sample_video()
    assert video.is_file(), f"bundled sample video missing: {video}"

    argv = replace_option(cmd, "--config", str(config_path))
    argv = replace_option(argv, "--source", f"video:{video}")  # camera:/dev/video0: no camera here
    argv = replace_option(argv, "--out", str(out_dir))

    env = dict(os.environ)
    for key, value in env_image.items():
        if key == "PATH":
            value = value.replace("$PATH", os.environ.get("PATH", "")).replace("${PATH}", os.environ.get("PATH", ""))
            value = ":".join([str(bin_dir), *(p for p in value.split(":") if p and Path(p).is_dir())])
        elif key == "HOLOBURN_ENGINE_CACHE":
            value = str(tmp_path / "engines")
        env[key] = value

    url = f"http://{LOOPBACK}:{port}/metrics"
    health = [*spec["healthcheck"], "--url", url]
    health_timeout = min(seconds(spec["healthcheck_options"].get("timeout", "30s")), 10.0)  # bounded here
    log_path = tmp_path / "run.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["bash", str(ENTRYPOINT_SCRIPT), *argv], cwd=workdir, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        # 1. frames counted: poll until the endpoint shows some (bounded)
        first, last_error = None, None
        while time.monotonic() - started < FIRST_FRAMES_TIMEOUT_S:
            if proc.poll() is not None:
                pytest.fail(f"the image's command exited ({proc.returncode}) before frames were counted:\n"
                            f"{tail(log_path)}")
            try:
                samples = scrape(url)
                if total(samples, "holoburn_frames_in_total") > 0:
                    first = samples
                    break
            except (urllib.error.URLError, OSError) as exc:  # not listening yet
                last_error = exc
            time.sleep(0.5)
        assert first is not None, (f"no frame counted at {url} within {FIRST_FRAMES_TIMEOUT_S:.0f} s "
                                   f"(last error: {last_error}):\n{tail(log_path)}")

        # 2. frames flowing: two scrapes, the count rises; they went through inference
        before = scrape(url)
        time.sleep(2.0)
        after = scrape(url)
        assert proc.poll() is None, f"the run stopped on its own ({proc.returncode}):\n{tail(log_path)}"
        frames_before = total(before, "holoburn_frames_in_total")
        frames_after = total(after, "holoburn_frames_in_total")
        assert frames_after > frames_before > 0, f"frames stalled: {frames_before} then {frames_after}"
        assert total(after, "holoburn_frames_processed_total") > 0, "frames arrive but none is processed"
        info = [dict(labels) for (name, labels) in after if name == "holoburn_pipeline_info"]
        assert info and info[0]["backend"] == "onnxruntime", info

        # 3. the image's HEALTHCHECK, pointed at this port, while the run goes on
        check = subprocess.run(health, env=env, cwd=workdir, capture_output=True, text=True, timeout=health_timeout)
        assert check.returncode == 0, (f"HEALTHCHECK {' '.join(health)} -> {check.returncode}:\n"
                                       f"{check.stdout}{check.stderr}")
        assert check.stdout.startswith("healthy: "), check.stdout
        assert proc.poll() is None, f"the run stopped during the health check:\n{tail(log_path)}"
    finally:
        # 4. stop it as `docker stop` does; whatever it does with the signal, it must be gone
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        # the run and anything it started (its own session and group, from start_new_session); the
        # group id is still held while the leader runs or any member is left, so it names only those
        if proc.poll() is None or live_members(proc.pid):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=5)
    assert proc.returncode is not None
    deadline = time.monotonic() + 2
    while live_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not live_members(proc.pid), f"left running: {live_members(proc.pid)}"
