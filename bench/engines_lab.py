"""GPU-lab check and timing of the torch backend (the GPU fallback where TensorRT is absent).

One call does everything and writes full numbers to $OUT/engines_lab.json (or --out):
  (a) agreement: the torch backend on CUDA, eager and CUDA-graph replay, FP32 (and FP16, reported)
      against ONNX Runtime FP32 on the CPU, on the same synthetic frames through the pipeline's
      preprocessing; pass when FP32 argmax agreement >= 99.5 % of pixels in both modes.
  (b) latency per frame (batch 1) at 256 and 512 per side, FP32 and FP16, eager and CUDA graph:
      CUDA events on the backend's own (non-default) stream around each infer(), after warm-up;
      median, p90, p99, mean in milliseconds.
A short table is printed last. Exit status 1 when the agreement check fails.

Lab use (one H100; see shared/GPU-LAB.md for the machine set-up):
    python3 -m pip install -q --no-deps -e . && python3 bench/engines_lab.py
Smoke test without a GPU (CPU, eager only, few iterations; a random-weight BurnUNet when the
shipped model is absent):
    python bench/engines_lab.py --dry-run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q))


def model_inputs(card, frames: int, seed: int) -> np.ndarray:
    """(frames, 3, S, S) float32: synthetic burn frames through the pipeline's preprocessing."""
    from holoburn.app.synthesis.synth import iter_frames
    from holoburn.processing.preprocess import prepare_input

    batch = [prepare_input(frame, card.input_size, card.mean, card.std)[0] for frame, _ in iter_frames(frames, seed, frames_per_scene=4)]
    return np.concatenate(batch, 0)


def agreement(card, inputs: np.ndarray, device: str, modes, precisions) -> dict:
    from holoburn.engines.backend import open_backend

    reference = open_backend(card, "onnxruntime", "fp32", device="cpu")
    ref = np.concatenate([reference.infer(x[None]) for x in inputs], 0)
    results = {}
    for precision in precisions:
        for mode in modes:
            backend = open_backend(card, "torch", precision, device=device, mode=mode)
            got = np.concatenate([backend.infer(x[None]) for x in inputs], 0)
            same = float((got.argmax(1) == ref.argmax(1)).mean())
            results[f"{precision}/{mode}"] = {
                "argmax_agreement": same,
                "max_abs_logit_diff": float(np.abs(got - ref).max()),
                "frames": int(len(inputs)),
                "gated": precision == "fp32",
                "pass": same >= 0.995 if precision == "fp32" else None,
            }
            backend.close()
    return results


def time_backend(backend, side: int, device: str, warmup: int, iterations: int) -> dict:
    """Per-frame latency of backend.infer on a (1, 3, side, side) device tensor, in milliseconds."""
    import torch

    if device.startswith("cuda"):
        x = torch.randn(1, 3, side, side, device=device)
        stream = backend._stream  # the backend's own non-default stream
        backend.reserve(1, side, side)  # CUDA graph captured before timing
        for _ in range(warmup):
            backend.infer(x, stream=stream)
        stream.synchronize()
        times = []
        for _ in range(iterations):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            backend.infer(x, stream=stream)
            end.record(stream)
            end.synchronize()
            times.append(start.elapsed_time(end))
        clock = "cuda events"
    else:
        x = np.random.default_rng(0).standard_normal((1, 3, side, side)).astype(np.float32)
        for _ in range(warmup):
            backend.infer(x)
        times = []
        for _ in range(iterations):
            started = time.perf_counter()
            backend.infer(x)
            times.append((time.perf_counter() - started) * 1000)
        clock = "perf_counter (cpu)"
    return {
        "median_ms": statistics.median(times), "p90_ms": percentile(times, 90), "p99_ms": percentile(times, 99),
        "mean_ms": statistics.fmean(times), "min_ms": min(times), "iterations": iterations, "warmup": warmup, "clock": clock,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model card (default: the shipped burn_unet_v1)")
    parser.add_argument("--out", default=os.environ.get("OUT", "out"), help="output folder (default $OUT)")
    parser.add_argument("--frames", type=int, default=32, help="frames for the agreement check (default 32)")
    parser.add_argument("--sides", default=None, help="square input sides to time (default 256,512; --dry-run 64,128)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--dry-run", action="store_true", help="CPU smoke test: eager only, few frames and iterations")
    args = parser.parse_args(argv)

    import torch

    from holoburn.engines.card import DEFAULT_CARD, load_card

    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    if args.dry_run:  # CPU PyTorch runs fp16 convolutions very slowly: keep the smoke test small
        args.frames, args.warmup, args.iterations = min(args.frames, 2), 1, 2
        args.sides = args.sides or "64,128"
    args.sides = args.sides or "256,512"
    tmp = tempfile.TemporaryDirectory(prefix="holoburn-lab-")
    card_path = args.model or (DEFAULT_CARD if DEFAULT_CARD.is_file() else None)
    if card_path is None:
        if not args.dry_run:
            print(f"no model card at {DEFAULT_CARD}: pass --model CARD", file=sys.stderr)
            return 2
        from holoburn.app.training.train import random_weight_card

        card_path = random_weight_card(Path(tmp.name), intended_use="benchmark smoke test only (random weights)")
    card = load_card(card_path)
    if args.dry_run and card.input_size > 128:  # agreement frames at a smaller square too
        from dataclasses import replace

        card = replace(card, input_size=128)
    modes = ("eager", "graph") if device == "cuda" else ("eager",)
    precisions = ("fp32", "fp16")
    sides = [int(s) for s in args.sides.split(",")]

    started = time.time()
    inputs = model_inputs(card, args.frames, seed=4_000_007)
    checks = agreement(card, inputs, device, modes, precisions)
    from holoburn.engines.backend import open_backend

    latency = {}
    for precision in precisions:
        for mode in modes:
            backend = open_backend(card, "torch", precision, device=device, mode=mode)
            for side in sides:
                latency[f"{side}/{precision}/{mode}"] = time_backend(backend, side, device, args.warmup, args.iterations)
            backend.close()
    passed = all(r["pass"] for r in checks.values() if r["gated"])
    result = {
        "what": "torch backend vs ONNX Runtime FP32 (agreement) and per-frame latency",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "device": torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "dry_run": args.dry_run,
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "model": {"card": str(card.path), "model_id": card.model_id, "sha256": card.model_sha256(), "input_size": card.input_size},
        "agreement": checks, "agreement_pass": passed, "latency": latency, "seconds": round(time.time() - started, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "engines_lab.json").write_text(json.dumps(result, indent=1) + "\n")

    print(f"\n{result['device']}, torch {torch.__version__}, model {card.model_id} ({card.input_size}px card)")
    print("agreement with ONNX Runtime fp32 (argmax, all pixels):")
    for name, r in checks.items():
        verdict = ("PASS" if r["pass"] else "FAIL") if r["gated"] else "info"
        print(f"  {name:13s} {r['argmax_agreement'] * 100:7.3f} %  max |dlogit| {r['max_abs_logit_diff']:.4f}  {verdict}")
    print("latency per frame, batch 1 (ms):")
    print(f"  {'side/prec/mode':22s} {'median':>8s} {'p99':>8s}")
    for name, r in latency.items():
        print(f"  {name:22s} {r['median_ms']:8.3f} {r['p99_ms']:8.3f}")
    print(f"written: {out / 'engines_lab.json'}")
    tmp.cleanup()
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
