#!/usr/bin/env bash
# GPU lab, one call: `holoburn run` with the default isolation (auto) on three cameras (one
# EMERGENCY, two routine; the bundled sample video), first with a CUDA MPS daemon (routine cameras
# in processes of their own), then after it quit (one process, and a warning saying why). Then every
# GPU test. Results under $OUT (no_mps/, mps/: summary.json and the console). Run from the repo
# root on the lab machine after the recipe in ../shared/GPU-LAB.md.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
video=$(python3 -c "from holoburn.app.run.command import sample_video; print(sample_video())")
work=$(mktemp -d); cp "$video" "$work/ward_a.mp4"; cp "$video" "$work/ward_b.mp4"
run() {  # $1: the folder under $out
  (cd /tmp && timeout 120 python3 -m holoburn.app run --source "video:$video@EMERGENCY" \
     --source "video:$work/ward_a.mp4" --source "video:$work/ward_b.mp4" --max-frames "${FRAMES:-90}" \
     --out "$work/$1") > "$out/$1.console.txt" 2>&1
  echo "$1: rc $?"; mkdir -p "$out/$1"; cp "$work/$1/summary.json" "$out/$1/" 2>/dev/null
  python3 - "$out/$1/summary.json" <<'PY'
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except OSError as exc:
    sys.exit(f"  no summary.json: {exc}")
iso = s.get("isolation") or {}
print("  sources here:", list(s.get("sources", {})), "| mps:", iso.get("mps"))
for p in iso.get("processes", []):
    print("  process", p.get("process"), p.get("sources"), "exit", p.get("exit_code"), "processed", p.get("processed"))
PY
  grep -iE "warning|isolation|mps" "$out/$1.console.txt" | head -5
}
state() { python3 -c "from holoburn.processing.isolation import mps_state; print('  mps_state:', mps_state())"; }
nvidia-cuda-mps-control -d && echo "MPS control daemon started"; state
run mps
echo quit | nvidia-cuda-mps-control; sleep 2; echo "MPS control daemon told to quit"; ls -la "${CUDA_MPS_PIPE_DIRECTORY:-/tmp/nvidia-mps}"; state
run no_mps  # after a daemon quit: its socket file may be left behind
[ "${GPU_TESTS:-1}" = 0 ] || (timeout "${TESTS_TIMEOUT:-150}" python3 -X faulthandler -m pytest -v -rxX -m gpu -p no:cacheprovider \
  > "$out/pytest_gpu.txt" 2>&1; grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed|Fatal" "$out/pytest_gpu.txt" | head -30)
