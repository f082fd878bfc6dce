#!/usr/bin/env bash
# Peak GPU memory of a whole generation (DiT then VAE decode) with one shared CUDA arena per GPU
# (the default) and with one arena per session (SKYREELS_CUDA_ARENA=session). Uses the TeaCache
# run of tools/bench/gpu_e2e.sh (shorter; same graphs and sizes). Run gpu_bench.sh 1.3b first.
# Usage: tools/bench/gpu_arena.sh [WORK_DIR]
set -uo pipefail
work="${1:-/tmp/skyreels-bench}"
bin="${BIN:-.carry/bin}"
for arena in shared session; do
  echo "== ours: DF generation, TeaCache 0.2, $arena arena"
  SKYREELS_CUDA_ARENA=$arena "$bin/e2e_bench" "$work/engine-1.3b" cuda 97 544 960 30 0.2 & pid=$!
  peak=0
  while kill -0 $pid 2>/dev/null; do
    m=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n1)
    [ "$m" -gt "$peak" ] && peak=$m
    sleep 0.5
  done
  wait $pid
  echo "{\"arena\": \"$arena\", \"peak_device_mib\": $peak}"
done
