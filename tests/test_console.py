"""What the `holoburn` command prints: its version, and on a machine without a GPU no CUDA-driver
warnings from Holoscan, GXF, CuPy, cuda-python or ONNX Runtime; Holoscan's stack advice once."""
from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from importlib.metadata import version

import pytest

from holoburn.app import cli

# what the CUDA stack says when there is no driver or no device (Holoscan, GXF, CuPy, cuda-python, ONNX Runtime)
CUDA_NOISE = re.compile(r"CUDA driver|cuInit|cudaGetDeviceCount|cudaError|CudaObjectHandler|GPU not available|"
                        r"CUDAExecutionProvider|libcuda|no CUDA-capable device", re.IGNORECASE)


def console(*args, stack_bytes=None):
    """The command as a user runs it: without the test session's HOLOSCAN_LOG_LEVEL (conftest)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HOLOSCAN_LOG_LEVEL", "HOLOSCAN_EXECUTOR_LOG_LEVEL")}

    def limit_stack():
        resource.setrlimit(resource.RLIMIT_STACK, (stack_bytes, stack_bytes))

    return subprocess.run([sys.executable, "-m", "holoburn.app", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, preexec_fn=limit_stack if stack_bytes else None)


def messages(stderr: str) -> list[str]:
    """stderr without the progress lines."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("frames:")]


def test_version_comes_from_the_package_metadata():
    result = console("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"holoburn {version('holoburn')}" and result.stderr == ""


def test_demo_prints_no_cuda_driver_warnings(tmp_path):
    result = console("demo", "--max-frames", 10, "--out", tmp_path / "demo")
    assert result.returncode == 0, result.stderr
    said = messages(result.stderr)
    assert not [line for line in said if CUDA_NOISE.search(line)], said
    if not cli.cuda_driver_usable():  # nothing else warns on a machine without a GPU either
        assert not [line for line in said if "warning" in line.lower() and "stack" not in line], said
    assert "frames in" in result.stdout


HARD_STACK = resource.getrlimit(resource.RLIMIT_STACK)[1]


@pytest.mark.skipif(HARD_STACK != resource.RLIM_INFINITY and HARD_STACK < 16 << 20,
                    reason="the hard stack limit is already below 16 MiB")
def test_a_stack_that_cannot_be_raised_is_said_once(tmp_path):
    result = console("demo", "--max-frames", 3, "--out", tmp_path / "demo", stack_bytes=16 << 20)
    assert result.returncode == 0, result.stderr
    said = [line for line in messages(result.stderr) if "stack" in line.lower()]
    assert len(said) == 1 and "ulimit -s 32768" in said[0], said
    assert not [line for line in messages(result.stderr) if CUDA_NOISE.search(line)]


def test_holoscan_is_quieted_only_without_a_gpu_and_never_against_the_user(monkeypatch):
    def levels(gpu: bool, verbose: bool = False, **preset) -> tuple:
        for name in ("HOLOSCAN_LOG_LEVEL", "HOLOSCAN_EXECUTOR_LOG_LEVEL"):
            monkeypatch.delenv(name, raising=False)
        for name, value in preset.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(cli, "cuda_driver_usable", lambda: gpu)
        cli._quiet_holoscan(graph=True, verbose=verbose)
        return os.environ["HOLOSCAN_LOG_LEVEL"], os.environ.get("HOLOSCAN_EXECUTOR_LOG_LEVEL")

    assert levels(gpu=True) == ("WARN", None)
    assert levels(gpu=False) == ("ERROR", "ERROR")  # errors still show
    assert levels(gpu=False, verbose=True) == ("WARN", None)
    assert levels(gpu=False, HOLOSCAN_LOG_LEVEL="INFO") == ("INFO", "ERROR")
