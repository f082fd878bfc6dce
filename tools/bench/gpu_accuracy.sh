#!/usr/bin/env bash
# fp16/bf16 accuracy of the tiny DiT fixtures on the GPU against the fp32 reference outputs.
# Usage: tools/bench/gpu_accuracy.sh [WORK_DIR]   (BIN as in gpu_bench.sh)
set -euo pipefail
work="${1:-/tmp/skyreels-accuracy}"
bin="${BIN:-.carry/bin}"
for model in df t2v i2v; do
  for dtype in fp32 fp16 bf16; do
    engine="$work/$model-$dtype"
    "$bin/skyreels-export" "tests/fixtures/dit/$model/diffusers" --out "$engine" --target cuda --dtype "$dtype" --no-causal --require dit --force >/dev/null 2>&1
    for case in tests/fixtures/dit/$model/cases/*.safetensors; do
      case "$case" in *batch2*|*causal*|*fps0*) continue ;; esac
      "$bin/dit_case" "$engine" cuda "$case"
    done
  done
done
