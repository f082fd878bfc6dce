#!/usr/bin/env bash
# End-to-end GPU benchmark, ours vs diffusers, on one machine: a 97-frame 544x960 diffusion-forcing
# generation (30 steps, guidance 6 with two forwards per step, shift 8) with the 1.3B DiT and the
# Wan VAE (random weights of the real shapes), ours without and with TeaCache, diffusers without.
# Run tools/bench/gpu_bench.sh 1.3b first (it writes and exports the model). Same needs as it.
# Usage: tools/bench/gpu_e2e.sh [WORK_DIR] [TEACACHE_THRESHOLD]   (SIDES=ours or SIDES=torch: one side)
set -uo pipefail
work="${1:-/tmp/skyreels-bench}"
threshold="${2:-0.2}"
bin="${BIN:-.carry/bin}"
here="$(cd "$(dirname "$0")" && pwd)"
frames=97; height=544; width=960; steps=30

# Runs a command while sampling the GPU's used memory; prints its peak as JSON after it.
with_peak() {
  "$@" & local pid=$! peak=0 m
  while kill -0 $pid 2>/dev/null; do
    m=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n1)
    [ "$m" -gt "$peak" ] && peak=$m
    sleep 0.5
  done
  wait $pid
  echo "{\"peak_device_mib\": $peak, \"command\": \"$(basename "$1") ${*:2}\"}"
}

sides="${SIDES:-both}"
if [ "$sides" != torch ]; then
  echo "== ours: DF generation, no TeaCache"
  with_peak "$bin/e2e_bench" "$work/engine-1.3b" cuda $frames $height $width $steps
  echo "== ours: DF generation, TeaCache $threshold (retention)"
  with_peak "$bin/e2e_bench" "$work/engine-1.3b" cuda $frames $height $width $steps "$threshold"
fi
if [ "$sides" != ours ]; then
  echo "== diffusers: DF generation"
  python3 "$here/torch_bench.py" e2e 1.3b $frames $height $width $steps
fi
