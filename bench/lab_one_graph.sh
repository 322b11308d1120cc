#!/usr/bin/env bash
# GPU lab, one call: the lanes benchmark on several trees of the code, alternating, RUNS times each;
# then the GPU tests. Trees (SIDES, default "before after"): before = lab_before/ (a `git archive` of
# the commit before issue 12), head = lab_head/ (a `git archive` of an earlier main, its models taken
# from this tree's engines/models where it has none), after = this tree.
# Results under $OUT (<side>_<run>.json and .log). Run from the repo root on the lab machine after
# the recipe in ../shared/GPU-LAB.md (wheels in .whl/, loaders in .gl/).
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
args=(--device cuda --steps ${STEPS:-chain,idle,lanes} --seconds 4 --warm 1.5 --routine-fps 240)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
tree_of() { case $1 in before) echo lab_before;; head) echo lab_head;; *) echo .;; esac; }
for side in ${SIDES:-before after}; do
  tree=$(tree_of $side)
  [ -d "$tree/engines/models" ] && ls "$tree"/engines/models/*.pt >/dev/null 2>&1 || cp engines/models/* "$tree/engines/models/"
done
for run in ${RUNS:-1 2 3}; do
  for side in ${SIDES:-before after}; do
    tree=$(tree_of $side)
    [ -d "$tree" ] || { echo "no tree $tree for $side"; continue; }
    python3 -m pip install -q --no-deps --no-build-isolation -e "$tree" >/dev/null 2>&1
    extra=(); [ $side = after ] && extra=(${AFTER_ARGS:-})  # e.g. AFTER_ARGS="--variants ,_noassess"
    (cd /tmp && timeout 150 python3 -m holoburn.app bench --lanes "${args[@]}" "${extra[@]}" --out "$out" --name "${side}_$run.json") \
      > "$out/${side}_$run.log" 2>&1
    echo "$side $run rc $?"
  done
done
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1
[ "${GPU_TESTS:-1}" = 0 ] || (timeout "${TESTS_TIMEOUT:-150}" python3 -X faulthandler -m pytest -v -rxX -m gpu -p no:cacheprovider \
  > "$out/pytest_gpu.txt" 2>&1; grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed|Fatal" "$out/pytest_gpu.txt" | head -30)
for f in "$out"/*_[0-9].log; do echo "== $(basename "$f")"; grep -E "source->overlay|emergency idle|emergency loaded|routine fps|errors|   (idle|lanes)" "$f" | tail -12; done
