#!/usr/bin/env bash
# GPU lab, one call: the lanes benchmark before (commit given as $1, exported to lab_before/)
# and after the one-graph change, side by side, then the GPU tests. Results under $OUT.
# Run from the repo root on the lab machine after the recipe in ../shared/GPU-LAB.md.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
steps="chain,idle,lanes,single"
args=(--device cuda --steps "$steps" --seconds 4 --warm 1.5 --routine-fps 240)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
if [ -d lab_before ]; then
  python3 -m pip install -q --no-deps --no-build-isolation -e lab_before >/dev/null 2>&1
  (cd /tmp && timeout 200 python3 -m holoburn.app bench --lanes "${args[@]}" --out "$out" --name before.json) \
    > "$out/before.log" 2>&1; echo "before rc $?"
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1
(cd /tmp && timeout 200 python3 -m holoburn.app bench --lanes "${args[@]}" --out "$out" --name after.json) \
  > "$out/after.log" 2>&1; echo "after rc $?"
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider -x 2>&1 | tail -25 > "$out/pytest_gpu.txt"; tail -5 "$out/pytest_gpu.txt"
for f in before after; do
  [ -f "$out/$f.log" ] && { echo "== $f"; grep -E "emergency|routine|e2e|p99|Error|error" "$out/$f.log" | tail -12; }
done
