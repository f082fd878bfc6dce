#!/usr/bin/env bash
# Measures what `skyreels snapshot check` sees across backends and precisions, to set the default
# tolerances of docs/SNAPSHOTS.md: the tiny model recorded on the CPU (fp32) and replayed on CUDA
# with fp32, fp16 and bf16 engines, and recorded on CUDA and replayed on CUDA (run-to-run).
# Every check runs with a tolerance that always passes, so the table shows the measured numbers.
# Usage: tools/bench/gpu_snapshot_tolerance.sh [WORK_DIR]   (BIN as in gpu_bench.sh: skyreels,
# skyreels-export; ORT_DYLIB_PATH / LD_LIBRARY_PATH as for every GPU script)
set -euo pipefail
work="${1:-/tmp/skyreels-snapshot-tolerance}"
bin="${BIN:-.carry/bin}"
mkdir -p "$work"
cat > "$work/cases.yaml" <<'YAML'
fox:
  prompt: a red fox running through fresh snow
  size: 96x64
  num_frames: 17
  steps: 10
  seed: 42
long:
  prompt: a cat on a wall
  size: 48x32
  num_frames: 33
  base_num_frames: 17
  overlap_history: 5
  addnoise_condition: 20
  ar_step: 1
  steps: 6
  seed: 7
YAML
loose="max_abs=1e9,relative=1e9,psnr=0"
"$bin/skyreels-export" tiny --out "$work/cpu-fp32" --force >/dev/null
for dtype in fp32 fp16 bf16; do
  "$bin/skyreels-export" tiny --out "$work/cuda-$dtype" --target cuda --dtype "$dtype" --force >/dev/null
done
rm -rf "$work/snap-cpu" "$work/snap-cuda"
"$bin/skyreels" snapshot record --engines "$work/cpu-fp32" --cases "$work/cases.yaml" --out "$work/snap-cpu"
"$bin/skyreels" snapshot record --engines "$work/cuda-fp32" --backend cuda --cases "$work/cases.yaml" --out "$work/snap-cuda"
echo "== CPU fp32 recording, CPU fp32 replay (default tolerance: exact)"
"$bin/skyreels" snapshot check --engines "$work/cpu-fp32" --snapshots "$work/snap-cpu"
for dtype in fp32 fp16 bf16; do
  echo "== CPU fp32 recording, CUDA $dtype replay"
  "$bin/skyreels" snapshot check --engines "$work/cuda-$dtype" --backend cuda --snapshots "$work/snap-cpu" --tolerance "$loose"
done
echo "== CUDA fp32 recording, CUDA fp32 replay (run to run)"
"$bin/skyreels" snapshot check --engines "$work/cuda-fp32" --backend cuda --snapshots "$work/snap-cuda" --tolerance "$loose"
