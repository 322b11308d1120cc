#!/usr/bin/env bash
# GPU lab, one call: the lanes benchmark before (lab_before/, a `git archive` of the commit before
# the one-graph change) and after it, alternating, three times each; then the GPU tests.
# Results under $OUT. Run from the repo root on the lab machine after the recipe in
# ../shared/GPU-LAB.md (wheels in .whl/, loaders in .gl/).
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
args=(--device cuda --steps checks,chain,idle,lanes,single --seconds 4 --warm 1.5 --routine-fps 240)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
for run in ${RUNS:-1 2 3}; do
  for side in before after; do
    tree=$([ $side = before ] && echo lab_before || echo .)
    [ -d "$tree" ] || continue
    python3 -m pip install -q --no-deps --no-build-isolation -e "$tree" >/dev/null 2>&1
    extra=(); [ $side = after ] && extra=(${AFTER_ARGS:-})  # e.g. AFTER_ARGS="--variants ,_noassess"
    (cd /tmp && timeout 150 python3 -m holoburn.app bench --lanes "${args[@]}" "${extra[@]}" --out "$out" --name "${side}_$run.json") \
      > "$out/${side}_$run.log" 2>&1
    echo "$side $run rc $?"
  done
done
[ "${GPU_TESTS:-1}" = 0 ] || timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider 2>&1 | tail -25 > "$out/pytest_gpu.txt"; tail -3 "$out/pytest_gpu.txt"
for f in "$out"/*_[123].log; do echo "== $(basename "$f")"; grep -E "source->overlay|emergency idle|emergency loaded|routine fps|errors|   (idle|lanes)" "$f" | tail -12; done
