#!/usr/bin/env bash
# Peak memory and time of the VAE decode under the shared arena's settings
# (SKYREELS_CUDA_ARENA_EXTEND, SKYREELS_CUDA_ARENA_INITIAL_MB). Run gpu_bench.sh 1.3b first.
# Usage: tools/bench/gpu_arena_tuning.sh [WORK_DIR]
set -uo pipefail
work="${1:-/tmp/skyreels-bench}"
bin="${BIN:-.carry/bin}"
run() {
  echo "== $*"
  env "$@" "$bin/vae_bench" "$work/engine-1.3b" cuda 25 68 120 & local pid=$! peak=0 m
  while kill -0 $pid 2>/dev/null; do
    m=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n1)
    [ "$m" -gt "$peak" ] && peak=$m
    sleep 0.2
  done
  wait $pid
  echo "{\"peak_device_mib\": $peak}"
}
run SKYREELS_CUDA_ARENA_EXTEND=same
run SKYREELS_CUDA_ARENA_EXTEND=pow2
run SKYREELS_CUDA_ARENA_INITIAL_MB=4096
run SKYREELS_CUDA_ARENA_INITIAL_MB=8192
run SKYREELS_CUDA_ARENA_EXTEND=pow2 SKYREELS_CUDA_ARENA_INITIAL_MB=4096
