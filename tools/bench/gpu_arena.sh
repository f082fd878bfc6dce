#!/usr/bin/env bash
# The CUDA arena's growth strategies against fragmentation (issue 10/13 memory), in one device call:
# the 97-frame VAE decode (vae_bench) and the 97-frame generation (e2e_bench, 10 steps: the peak
# does not depend on the step count) under measure.py (whole-process peak from nvidia-smi), each
# line with the arena's own statistics (live bytes at most, reserved bytes, extensions):
#   default     regions of exactly the size asked (ONNX Runtime's kSameAsRequested)
#   pow2-1g     regions doubling, at most 1 GiB each (SKYREELS_CUDA_ARENA_EXTEND=pow2,
#               SKYREELS_CUDA_ARENA_MAX_EXTEND_MB=1024)
#   pow2        regions doubling without a cap
#   initial-8g  an 8 GiB first region (SKYREELS_CUDA_ARENA_INITIAL_MB=8192; ONNX Runtime applies
#               it to the doubling strategy only, so with the default it changes nothing)
# Then prints one row per line. Needs: what compare.sh needs (prepare_carry.sh).
# Usage: tools/bench/gpu_arena.sh [RESULTS]   (BIN, default .carry/bin; ORT, /opt/ortgpu/ortlib;
#        WORK, /tmp/skyreels-bench, where the 1.3B engine is made if missing)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
results="${1:-${OUT:-/tmp}/arena.jsonl}"
# shellcheck source=tools/bench/ours.sh
source "$here/ours.sh"
ensure_engine_1_3b || exit 1
variants=(
  "default:"
  "pow2-1g:SKYREELS_CUDA_ARENA_EXTEND=pow2 SKYREELS_CUDA_ARENA_MAX_EXTEND_MB=1024"
  "pow2:SKYREELS_CUDA_ARENA_EXTEND=pow2"
  "initial-8g:SKYREELS_CUDA_ARENA_INITIAL_MB=8192"
)
for variant in "${variants[@]}"; do
  # shellcheck disable=SC2206  # a list of VAR=VALUE words
  settings=(${variant#*:})
  measure "vae ${variant%%:*}" "${settings[@]}" "$bin/vae_bench" "$work/engine-1.3b" cuda 25 68 120
done
for variant in "${variants[@]:0:3}"; do
  # shellcheck disable=SC2206
  settings=(${variant#*:})
  measure "generation ${variant%%:*}" "${settings[@]}" "$bin/e2e_bench" "$work/engine-1.3b" cuda 97 544 960 10
done
arena_rows "$results"
