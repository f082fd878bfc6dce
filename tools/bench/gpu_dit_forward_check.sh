#!/usr/bin/env bash
# The DiT block graphs on the GPU against the reference fixtures (issue 10's CUDA path: layer
# weights uploaded once and bound per layer, tokens kept on the device, the attention graph per
# query block with an empty first prefix): every case of tests/fixtures/dit/*/cases, including
# the block-causal one, through `skyreels dit-forward --backend cuda`, on fp32 engines with
# contrib-MHA attention (the --target cuda default). Prints one line per case with the max-abs
# error against the recorded velocity; fails above 2e-3 (ONNX Runtime's CUDA matmuls use TF32: the
# whole-stack graphs gave 7.0e-4–9.7e-4 on these fixtures, docs/STATUS.md).
# Needs: ONNX Runtime GPU (ORT_DYLIB_PATH, CUDA 13 and cuDNN 9 on LD_LIBRARY_PATH), skyreels and
# skyreels-export in BIN (default .carry/bin; tools/bench/prepare_carry.sh puts skyreels-export
# there, add `cargo build --release -p skyreels-runtime --bin skyreels` and
# `strip -o .carry/bin/skyreels target/release/skyreels`), python3 with numpy and safetensors.
# Usage: tools/bench/gpu_dit_forward_check.sh [WORK_DIR]
set -euo pipefail
work="${1:-/tmp/skyreels-dit-forward}"
bin="${BIN:-.carry/bin}"
mkdir -p "$work"
status=0
for model in df t2v i2v; do
  engine="$work/$model-fp32"
  "$bin/skyreels-export" "tests/fixtures/dit/$model/diffusers" --out "$engine" --target cuda --dtype fp32 --require dit --force >/dev/null
  for case in tests/fixtures/dit/$model/cases/*.safetensors; do
    block=$(python3 -c "from safetensors.numpy import load_file; t = load_file('$case'); print(int(t['causal_block_size'][0]) if 'causal_block_size' in t else '')")
    out="$work/velocity.safetensors"
    "$bin/skyreels" dit-forward --engines "$engine" --inputs "$case" --out "$out" --backend cuda ${block:+--causal-block-size $block}
    python3 - "$case" "$out" <<'PY' || status=1
import sys
import numpy as np
from safetensors.numpy import load_file
expected = load_file(sys.argv[1])["velocity"]
got = load_file(sys.argv[2])["velocity"]
error = float(np.abs(expected - got).max())
print(f"{sys.argv[1]}: max-abs {error:.3e}")
sys.exit(0 if error <= 2e-3 else 1)
PY
  done
done
exit $status
