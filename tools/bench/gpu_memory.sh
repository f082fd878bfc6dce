#!/usr/bin/env bash
# Where the device memory of the 1.3B DiT forward and the 97-frame VAE decode goes, under the
# arena and provider settings that can change it (issues 10 and 13), in one device call: each
# variant runs dit_bench and vae_bench under measure.py (whole-process peak from nvidia-smi), and
# each result line carries the CUDA arena's own statistics (live bytes at most, reserved bytes,
# largest block). The DiT goal is the whole-process peak at or below diffusers' allocated 7.8 GiB;
# the VAE's at or below 6.0 GiB. Prints one row per variant.
# Variants: the default; the arena grown by powers of two, capped at 1 GiB per growth; one 6 GiB
# first region (everything inside one region coalesces); the arena's free blocks given back after
# every run (shrink-every); CUDA's stream-ordered pool instead of the arena (mempool); no arena,
# every tensor its own cuMemAlloc (direct); channels-last convolutions (VAE only), alone and with
# direct; then the 97-frame generation (10 steps) with the arena's free blocks kept at the final
# decode, given back (the default), given back with channels-last convolutions, and without an
# arena (direct); last the generation with the real-size text encoder, whole and streamed, and
# streamed with a tiled decode.
# Needs: what compare.sh needs (its engine /tmp/skyreels-bench/engine-1.3b is made if missing).
# Usage: tools/bench/gpu_memory.sh [RESULTS]      (BIN, default .carry/bin; ORT, /opt/ortgpu/ortlib)
# ROWS="dit-default vae-nhwc generation-shrink ..." runs only those rows (labels as printed).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
results="${1:-${OUT:-/tmp}/memory.jsonl}"
# shellcheck source=tools/bench/ours.sh
source "$here/ours.sh"
ensure_engine_1_3b || exit 1
measure_timeout=120
variants=(
  "default:"
  "pow2-1g:SKYREELS_CUDA_ARENA_EXTEND=pow2 SKYREELS_CUDA_ARENA_MAX_EXTEND_MB=1024"
  "first-6g:SKYREELS_CUDA_ARENA_INITIAL_MB=6144"
  "shrink-every:SKYREELS_CUDA_ARENA_SHRINK=every"
  "mempool:SKYREELS_CUDA_ARENA=mempool"
  "direct:SKYREELS_CUDA_ARENA=direct"
  "nhwc:SKYREELS_CUDA_PREFER_NHWC=1"
  "direct-nhwc:SKYREELS_CUDA_ARENA=direct SKYREELS_CUDA_PREFER_NHWC=1"
)
for variant in "${variants[@]}"; do
  name="${variant%%:*}"
  # shellcheck disable=SC2206  # a list of VAR=VALUE words
  settings=(${variant#*:})
  if [[ "$name" != *nhwc ]]; then
    measure "dit $name" "${settings[@]}" "$bin/dit_bench" "$work/engine-1.3b" cuda 25 68 120 3
  fi
  measure "vae $name" "${settings[@]}" "$bin/vae_bench" "$work/engine-1.3b" cuda 25 68 120
done
# The generation's peak (97 frames at 544x960, 10 steps: the peak does not depend on the step
# count): the DiT's layer weights are released before the final decode either way; by default
# the decode's first run also gives the arena's free blocks back (SKYREELS_CUDA_ARENA_SHRINK=0: not).
for variant in "generation-keep:SKYREELS_CUDA_ARENA_SHRINK=0" "generation-shrink:" "generation-shrink-nhwc:SKYREELS_CUDA_PREFER_NHWC=1" \
  "generation-direct:SKYREELS_CUDA_ARENA=direct" "generation-direct-nhwc:SKYREELS_CUDA_ARENA=direct SKYREELS_CUDA_PREFER_NHWC=1"; do
  # shellcheck disable=SC2206  # a list of VAR=VALUE words
  settings=(${variant#*:})
  measure "${variant%%:*}" "${settings[@]}" "$bin/e2e_bench" "$work/engine-1.3b" cuda 97 544 960 10
done
# A small GPU's generation with the real-size umT5-XXL: its 11.4 GB of weights on the device
# (whole graph), then its blocks and the DiT's layers streamed (--offload) without an arena.
measure "generation-text-whole" "$bin/e2e_bench" "$work/engine-1.3b" cuda 97 544 960 10 --text-encoder
measure "generation-text-offload-direct" SKYREELS_CUDA_ARENA=direct "$bin/e2e_bench" "$work/engine-1.3b" cuda 97 544 960 10 --text-encoder --offload
# ... and with the decode in diffusers' 256-pixel tiles (--vae-tiling): everything a small GPU needs.
measure "generation-small-gpu" SKYREELS_CUDA_ARENA=direct "$bin/e2e_bench" "$work/engine-1.3b" cuda 97 544 960 10 --text-encoder --offload --vae-tiling
arena_rows "$results"
