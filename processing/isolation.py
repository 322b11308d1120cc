"""Lanes in processes of their own: what the run and the benchmark share (no Holoscan here).

Cameras of the urgent lanes stay in the main process; routine cameras go to worker processes
that run the same graph. Under CUDA MPS (a control daemon running) the processes' kernels share
the SMs side by side and each routine process is held to a share of them
(`CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`) and may be made a below-normal client
(`CUDA_MPS_CLIENT_PRIORITY`: the MPS server then schedules the urgent process's work first, as
stream priorities do within a process); without MPS they time-slice the GPU, which the callers say
in their log and results. With several GPUs the routine processes go to the GPUs other than the
main process's, round robin.
"""
from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

log = logging.getLogger("holoburn")


def mps_pipe_directory() -> Path:
    return Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps"))


def mps_control(command: str, timeout: float = 5.0) -> str | None:
    """One command to the MPS control daemon (its reply), or None where there is none."""
    try:
        done = subprocess.run(["nvidia-cuda-mps-control"], input=command + "\n", capture_output=True, text=True,
                              timeout=timeout, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired, PermissionError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def mps_state() -> dict:
    """Whether CUDA processes started now become clients of an MPS server: a control daemon is
    listening on its socket. One that has quit can leave the socket file behind; a connection to
    it is then refused, and that is said."""
    import errno
    import socket

    control = mps_pipe_directory() / "control"
    start = "start one with `nvidia-cuda-mps-control -d` as the GPU's owner"
    if not control.exists():
        return {"active": False, "why": f"no MPS control daemon ({control} does not exist; {start})"}
    if control.is_socket():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(str(control))
            except OSError as exc:  # another kind of refusal (e.g. the socket's type): taken as listening
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    return {"active": False, "why": f"no MPS control daemon ({control} is left from one that is no "
                                                    f"longer running: {exc.strerror}; {start})"}
    return {"active": True, "pipe_directory": str(mps_pipe_directory())}


def gpu_count() -> int:
    try:
        import cupy
    except ImportError:
        return 0
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except cupy.cuda.runtime.CUDARuntimeError:  # no driver: no GPU to place workers on
        return 0


def worker_gpus(workers: int, gpus: int, emergency_gpu: int = 0) -> list[int | None]:
    """The GPU of each routine worker: the GPUs other than the emergency process's, round robin;
    with one GPU (or none known) they share it (None: leave CUDA_VISIBLE_DEVICES as it is)."""
    others = [g for g in range(gpus) if g != emergency_gpu]
    if not others:
        return [None] * workers
    return [others[k % len(others)] for k in range(workers)]


def split_streams(streams: int, workers: int) -> list[int]:
    """Cameras per worker, as even as can be; workers without a camera are not started."""
    base, extra = divmod(streams, workers)
    return [n for n in (base + (1 if k < extra else 0) for k in range(workers)) if n]


#: CUDA_MPS_CLIENT_PRIORITY's values (NVIDIA's MPS documentation, environment variables)
MPS_CLIENT_PRIORITY = {"normal": 0, "below_normal": 1}


def worker_env(gpu: int | None, sm_percent: int | None, mps: dict, priority: str = "normal") -> dict:
    """The environment of one routine process: its GPU, and under MPS its share of SMs and its
    client priority ("normal" or "below_normal", the urgent process staying normal)."""
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if mps.get("active") and sm_percent:
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(int(sm_percent))
    if mps.get("active"):
        env["CUDA_MPS_CLIENT_PRIORITY"] = str(MPS_CLIENT_PRIORITY[priority])
    return env


def routine_places(count: int, sm_percent: int | None,
                   priority: str = "normal") -> tuple[dict, list[tuple[int | None, dict]]]:
    """For `count` routine processes on a GPU machine: the MPS state, and each process's GPU (None:
    shared) and environment. Without MPS a warning says that the processes time-slice the GPU."""
    mps = mps_state()
    if not mps["active"]:
        log.warning("routine cameras in processes of their own without CUDA MPS: %s. The processes time-slice the GPU",
                    mps["why"])
    return mps, [(gpu, worker_env(gpu, sm_percent, mps, priority)) for gpu in worker_gpus(count, gpu_count())]


def stop_processes(procs, timeout: float) -> None:
    """SIGTERM to those still running (each writes what it has), then wait; kill after `timeout`."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
