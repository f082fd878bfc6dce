#!/usr/bin/env bash
# Where the GPU time goes: ONNX Runtime's per-node profile of one DiT forward and of the VAE decode
# (CUDA_LAUNCH_BLOCKING=1, so node times are GPU times), summarised by operator type; then the DiT
# forward with each of ONNX Runtime's attention kernels (KERNELS, default "1 8 2"; empty: none).
# Run gpu_bench.sh 1.3b (or compare.sh, whose work directory is the default) first.
# Usage: tools/bench/gpu_profile.sh [WORK_DIR]
set -uo pipefail
work="${1:-/tmp/skyreels-bench}"
bin="${BIN:-.carry/bin}"
here="$(cd "$(dirname "$0")" && pwd)"
profiles="$work/profiles"
rm -rf "$profiles" && mkdir -p "$profiles"
CUDA_LAUNCH_BLOCKING=1 SKYREELS_ORT_PROFILE="$profiles/dit" "$bin/dit_bench" "$work/engine-1.3b" cuda 25 68 120 1
CUDA_LAUNCH_BLOCKING=1 SKYREELS_ORT_PROFILE="$profiles/vae" "$bin/vae_bench" "$work/engine-1.3b" cuda 25 68 120
python3 "$here/ort_profile_summary.py" "$profiles"/*.json
for kernel in ${KERNELS-1 8 2}; do
  echo "== DiT forward, SKYREELS_CUDA_SDPA_KERNEL=$kernel"
  SKYREELS_CUDA_SDPA_KERNEL=$kernel "$bin/dit_bench" "$work/engine-1.3b" cuda 25 68 120 3
done
