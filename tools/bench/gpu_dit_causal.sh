#!/usr/bin/env bash
# DiT forward on the GPU, full vs block-causal self-attention (issue 10): random bf16 weights of the
# real shapes, 544x960, 97 frames (25 latent frames of 68x120), causal block size 5 (5 query blocks
# of 10,200 tokens, each over its key prefix; no [L, L] mask). One JSON line per run from
# dit_bench, then the run's peak device memory (nvidia-smi, whole GPU) as JSON.
# Needs: ONNX Runtime GPU (ORT_DYLIB_PATH), release builds of skyreels-export, write_random_dit and
# dit_bench in BIN (default .carry/bin).
# Usage: tools/bench/gpu_dit_causal.sh [1.3b|14b] [WORK_DIR] [ITERATIONS]
set -euo pipefail
size="${1:-1.3b}"
work="${2:-/tmp/skyreels-bench}"
iterations="${3:-3}"
bin="${BIN:-.carry/bin}"
mkdir -p "$work"
frames=25; height=68; width=120; block=5
if [ ! -f "$work/dit-$size/model.safetensors" ]; then
  "$bin/write_random_dit" "$size" "$work/dit-$size"
fi
"$bin/skyreels-export" "$work/dit-$size" --out "$work/engine-$size-blocks" --target cuda --dtype bf16 --require dit --force
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
with_peak() {
  "$@" & local pid=$! peak=0 m
  while kill -0 $pid 2>/dev/null; do
    m=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n1)
    [ "$m" -gt "$peak" ] && peak=$m
    sleep 0.2
  done
  wait $pid
  echo "{\"peak_device_mib\": $peak, \"command\": \"$(basename "$1") ${*:2}\"}"
}
echo "== ours: DiT $size forward, full attention"
with_peak "$bin/dit_bench" "$work/engine-$size-blocks" cuda $frames $height $width "$iterations"
echo "== ours: DiT $size forward, block-causal attention (causal block size $block)"
with_peak "$bin/dit_bench" "$work/engine-$size-blocks" cuda $frames $height $width "$iterations" --causal-block-size $block
