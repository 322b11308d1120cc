"""The saturated lanes benchmark over repeated runs (issue 15): one file with each run's figures,
their spread (min, median, max) and the goals judged on the worst run.

    python3 bench/saturated_summary.py OUT/saturated_1.json OUT/saturated_2.json ... --out lanes_h200_saturated.json

Each input is what `holoburn bench --lanes` wrote for one run (bench/lab_saturated.sh makes them).
The isolated step judged is the first one of each run (the default process set); every isolated
step stays in the run's own figures.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def get(node, *path):
    for key in path:
        if not isinstance(node, dict) or node.get(key) is None:
            return None
        node = node[key]
    return node


def allocations(step: dict) -> int | None:
    """Device allocations after warm-up in one step: this process's lanes, and the routine workers'."""
    from holoburn.app.benchmarks.lanes import allocation_count

    count = None
    if isinstance(step.get("allocations"), dict):  # holoburn's own lanes in this process
        count = allocation_count(step["allocations"])
    if "worker_allocations_after_warmup" in step:
        count = (count or 0) + sum(a or 0 for a in step["worker_allocations_after_warmup"])
    if isinstance(step.get("allocations_after_warmup"), dict):  # the peer: torch's allocator counts
        count = sum(v for v in step["allocations_after_warmup"].values() if isinstance(v, int))
    return count


def run_figures(result: dict) -> dict:
    """One run's headline: idle, lanes, isolated (each step), peer, end-to-end, losses, allocations."""
    steps = {name: step for name, step in result.items() if isinstance(step, dict) and "emergency_latency_ms" in step}
    figures = {"steps": {}}
    for name, step in steps.items():
        frames = step.get("emergency_frames") or {}
        lost = frames.get("lost")
        if lost is None and frames.get("offered") is not None:
            lost = frames["offered"] - (frames.get("processed") or 0)
        figures["steps"][name] = {
            "emergency_p50_ms": get(step, "emergency_latency_ms", "p50"),
            "emergency_p99_ms": get(step, "emergency_latency_ms", "p99"),
            "routine_fps": step.get("routine_fps"),
            "emergency_frames_lost": lost,
            "allocations_after_warmup": allocations(step),
        }
    figures["e2e_ms_by_step"] = result.get("e2e_ms_by_step")
    figures["allocations_after_warmup"] = result.get("allocations_after_warmup")
    return figures


def spread(values: list) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": min(values), "median": round(statistics.median(values), 3), "max": max(values), "runs": len(values)}


def worst(values: list, pick):
    """pick (min or max) of the values measured; None where none was."""
    measured = [v for v in values if v is not None]
    return pick(measured) if measured else None


def summarise(paths: list[Path]) -> dict:
    results = [json.loads(Path(p).read_text()) for p in paths]
    runs = [run_figures(r) for r in results]
    first = results[0]
    idle = next((k for k in runs[0]["steps"] if k.startswith("idle")), None)
    isolated = next((k for k in runs[0]["steps"] if k.startswith("isolated")), None)
    lanes = next((k for k in runs[0]["steps"] if k.startswith("lanes")), None)
    summary = {
        "what": "holoburn bench --lanes, saturated, repeated runs (bench/lab_saturated.sh); figures per run and "
                "their spread",
        "commands": [r.get("command") for r in results],
        "device": first.get("device"),
        "environment": first.get("environment"),
        "mps": get(first, isolated, "mps") if isolated else first.get("mps"),
        "routine_processes": get(first, isolated, "workers") if isolated else None,
        "runs": runs,
        "spread": {},
    }
    for step in sorted({k for r in runs for k in r["steps"]}):
        summary["spread"][step] = {key: spread([get(r, "steps", step, key) for r in runs])
                                   for key in ("emergency_p99_ms", "routine_fps")}
    ratios = []
    for r in runs:
        iso, idl = get(r, "steps", isolated, "emergency_p99_ms"), get(r, "steps", idle, "emergency_p99_ms")
        ratios.append(round(iso / idl, 2) if iso and idl else None)
    summary["spread"]["isolated_p99_over_idle_p99"] = spread(ratios)
    peer = [get(r, "steps", "peer", "emergency_p99_ms") for r in runs]
    peer_fps = [get(r, "steps", "peer", "routine_fps") for r in runs]
    mine = [get(r, "steps", isolated, "emergency_p99_ms") for r in runs]
    mine_fps = [get(r, "steps", isolated, "routine_fps") for r in runs]
    summary["peer"] = {
        "what": "holoburn bench --peer (app/benchmarks/peer.py): one Python thread per camera, plain PyTorch fp16, "
                "CUDA graphs, emergency stream at the highest priority; same frames, schedule and percentiles",
        "tuning": get(first, "peer", "tuning"),
        "per_run": [{"emergency_p99_ms": p, "routine_fps": f} for p, f in zip(peer, peer_fps)],
        "peer_p99_over_holoburn_p99": spread([round(p / m, 2) if p and m else None for p, m in zip(peer, mine)]),
        "holoburn_fps_over_peer_fps": spread([round(m / p, 2) if p and m else None for p, m in zip(peer_fps, mine_fps)]),
        "holoburn_step": isolated,
    }
    holoviz = [v["p99"] for r in runs for k, v in (r.get("e2e_ms_by_step") or {}).items() if k.startswith("holoviz")]
    summary["goals_on_the_worst_run"] = {
        "isolated_p99_le_1_5x_idle": (worst(ratios, max) or 99) <= 1.5,
        "no_emergency_frame_lost": all(not get(r, "steps", s, "emergency_frames_lost") for r in runs for s in r["steps"]
                                       if s.startswith(("idle", "lanes", "isolated"))),
        "routine_fps_ge_1250": (worst(mine_fps, min) or 0) >= 1250,
        "no_allocation_after_warmup": all(not get(r, "steps", s, "allocations_after_warmup") for r in runs
                                          for s in r["steps"] if s.startswith(("idle", "lanes", "isolated"))),
        "e2e_p99_with_holoviz_le_5ms": (max(holoviz) <= 5.0) if holoviz else None,
        "ahead_of_peer_on_p99": all(p and m and m < p for p, m in zip(peer, mine)),
        "ahead_of_peer_on_routine_fps": all(p and m and m > p for p, m in zip(peer_fps, mine_fps)),
    }
    summary["in_process_lanes_step"] = lanes
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    summary = summarise(args.runs)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    for step, figures in summary["spread"].items():
        print(f"{step}: {json.dumps(figures)}")
    print("versus peer:", json.dumps({k: summary["peer"][k] for k in ("peer_p99_over_holoburn_p99", "holoburn_fps_over_peer_fps")}))
    print("goals on the worst run:", json.dumps(summary["goals_on_the_worst_run"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
